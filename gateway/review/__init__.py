"""Review: messages held for a second committee member, review requests and the decisions on them.

Review may import the policy core, ``state`` and the shell helpers; never ``intake``, ``delivery``,
``decision`` or ``cli``.
"""
