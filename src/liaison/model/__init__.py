"""The pure domain model: events, principals and the access decision."""
