"""The pure policy core: parsed message + envelope + policy + facts in, verdict out. No I/O here."""
