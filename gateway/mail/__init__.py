"""Mail: the values the layers hand each other, and the text of the mail and replies the gateway writes.

``messages`` holds a ``Submission`` (a message as received) and an ``Outgoing`` message (one the
gateway sends itself); ``disposition`` the ``Disposition`` a decision returns (the screener's and the
review desk's alike) and its parts; ``notices`` builds the gateway's own letters to committee
members; ``verdict_replies`` writes what a sender and the recipients are told about a verdict. It
sits below ``decision`` and ``review`` so both may use it.

Mail may import the policy core, ``state`` and the shell helpers; never ``intake``, ``decision``,
``review``, ``delivery`` or ``cli``.
"""
