"""State: everything the gateway keeps durably, each store behind a typed port.

The queue (spool), the holds, the audit trail, the thread ledger, the fingerprints, the case registry,
the accounts, the overrides, the committee digest's periods, the rate limits counted across gateways and
the gateways' presence. ``ports`` (and ``holds_port``) declare what the rest of the gateway may ask of
each store; ``open_state(settings)`` (``opening``) returns a ``State`` with one field per port, and is
the only code that places stores under ``state_dir`` (``layout`` names the files); ``files`` owns atomic
writes, folder fsyncs, private modes and locks for every file store. Only this package touches storage;
it may import the policy core's plain data types and the shell helpers (settings, errors, logs), never
``intake``, ``mail``, ``decision``, ``review``, ``delivery`` or ``cli``. ``tls`` keeps the self-signed
TLS pair under ``state_dir``.
"""
