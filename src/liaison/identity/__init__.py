"""Who a peer is: the certificate authority, issuing and revoking client certificates, TLS
contexts, PKCS#12 files, users, groups, connection packages, the listener kinds, and the rules that
turn a certificate, a login or a token into a ``Principal``.

Modules, lowest first: ``files`` (atomic writes, the PKI lock), ``certs`` (the PKI folder and
certificate plumbing), ``issue`` (client certificates and the issued index), ``revocation`` (revoke,
CRL, per-handshake cache), ``ca`` (the CA and the server certificate, import, doctor checks),
``tls``, ``p12``, ``users``, ``groups``, ``packages`` (connection packages, QR codes),
``listeners`` (the ``Listener`` kinds), ``events`` (revocation and sign-out as events) and
``principals`` (``Identities``). Nothing here imports the router, sessions, transports, the HTTP
side or the app; this package imports no module of its own at import time.
"""
