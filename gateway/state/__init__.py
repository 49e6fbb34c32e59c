"""State: everything the gateway keeps durably.

The queue (spool), the audit trail, the thread ledger, the fingerprints, the case registry and the
accounts. Only this package touches storage; it may import the policy core's plain data types and the
shell helpers (settings, errors, logs), never ``intake``, ``decision``, ``review``, ``delivery`` or
``cli``.
"""
