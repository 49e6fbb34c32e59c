"""Delivery: queued messages to the upstream server or local Maildir, retries and bounces.

The queue manager, the upstream client, local Maildir delivery and delivery status notifications. It
may import ``state`` and the shell helpers; never ``intake``, ``decision``, ``review`` or ``cli``.
"""
