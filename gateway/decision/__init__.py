"""Decision: a submission screened by the policy, and what the verdict leads to.

The screener parses a message, gathers the facts the pure policy core needs, evaluates it (in worker
processes) and turns the verdict into replies, notices and records to commit. It may import the
policy core, ``mail``, ``state``, ``review`` and the shell helpers; never ``intake``, ``delivery`` or
``cli``.
"""
