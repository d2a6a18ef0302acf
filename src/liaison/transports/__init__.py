"""The code that carries bytes: stream listeners (TCP, TLS), datagram endpoints (UDP), and the
one outbound queue (`outbound.py`, pure: no sockets) every carrier writes from."""
