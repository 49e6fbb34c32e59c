"""The PostgreSQL backend: the same ports as the files backend, in one database several gateways share.

``database`` holds the connection pool (and maps driver errors to the gateway's own), ``migrate``
applies the versioned schema in ``migrations/`` and tells a gateway whether it may run on a
database. One module per store implements that store's port from ``gateway.state.ports``.
May import: the state package's ports and record types, the shell helpers, psycopg.
"""
