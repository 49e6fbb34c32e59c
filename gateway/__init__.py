"""conduct-gateway: an SMTP policy gateway for people who handle sensitive reports."""

__version__ = "0.1.0"
