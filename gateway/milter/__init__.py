"""Milter mode: the gateway's policy inside an existing Postfix (or Sendmail), through the milter protocol.

``session`` is the protocol conversation without I/O (kilter-protocol's parsers and state machine),
``actions`` turns the decision layer's ``Disposition`` into milter actions, ``judging`` has the same
screener the SMTP intake uses decide a message and commits what that decision records, ``server``
is the asyncio listener (``inet:PORT@HOST`` or ``unix:PATH``) and ``holding`` releases or deletes
messages in Postfix's hold queue as the review desk decides.

May import: decision, the ``gateway.state`` package, policy, review's values, the shell helpers.
Never imports: intake, delivery, the CLI (the CLI starts the milter through ``gateway.milter_app``).
"""
