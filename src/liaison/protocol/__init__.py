"""Sans-IO protocol code: bytes in, events out, bytes out. No sockets, asyncio or clock here."""
