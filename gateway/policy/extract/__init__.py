"""Attachment formats read from their bytes: sniff the real type, then extract text or say why not.

Each module reads one family of formats in memory and returns an
:class:`~gateway.policy.extract.parts.Extraction` (texts, files found inside, parts that cannot be
read); :func:`gateway.policy.extract.documents.read` dispatches on the sniffed format. Every module
here is pure (bytes in, data out) and never raises: a library exception is an unreadable part.
"""
