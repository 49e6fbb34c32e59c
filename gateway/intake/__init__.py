"""Intake: the SMTP submission listeners, the journal listener and the checks made at the door.

Intake turns bytes from a mail client into a screened submission and answers it: it may import the
decision layer (to screen and commit), ``state`` only through what the decision layer hands it, the
shell helpers at the top of the package (settings, replies, logs, metrics) and the pure policy
core. It never imports ``delivery``: intake and delivery meet only through the queue.
"""
