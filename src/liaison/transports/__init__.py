"""The only code that opens sockets: stream listeners (TCP, TLS) and datagram endpoints (UDP)."""
