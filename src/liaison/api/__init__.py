"""The HTTP side: Marti endpoints for TAK clients, enrollment, the REST API and the web map.

Every response that carries an item is produced through the router (``Router.visible`` and the
query methods next to it), so the HTTP side passes the same access decision as live delivery.
"""
