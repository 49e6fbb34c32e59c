"""Review: messages held for a second committee member, review requests and the decisions on them.

``desk`` is the decision state machine (hold, decide, confirm or undo, upkeep); ``inbox`` checks a
reply to a review address, ``reply_parsing`` reads the decision in it, ``tokens`` makes and reads
the reply addresses, ``letters`` says what people are told, ``outgoing`` turns letters and releases
into messages to spool, ``auditing`` records review events, ``upkeep`` and ``reassign`` are the
periodic work, ``rights`` reads review rights from the users file. The committee and quorum rules
are pure and live in ``gateway.policy.reviewers``; the hold records and their store in
``gateway.state.holds``.

The desk returns ``Disposition``s (``gateway.mail``) that the decision layer's ``commit`` applies.
Review may import the policy core, ``mail``, ``state`` and the shell helpers; never ``intake``,
``delivery``, ``decision`` or ``cli``.
"""
