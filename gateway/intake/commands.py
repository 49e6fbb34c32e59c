"""SMTP command arguments: reverse and forward paths, ESMTP parameters, and which recipients are refused."""

from __future__ import annotations

import functools

from email_validator import EmailNotValidError, validate_email


def parse_path(arg: str, keyword: str) -> tuple[str, list[str]] | None:
    """Split ``FROM:<path> PARAM...`` / ``TO:<path> PARAM...``; None if the syntax is wrong."""
    if arg[: len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword) :].strip()
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            return None
        path, tail = rest[1:end], rest[end + 1 :]
        if tail and not tail[0].isspace():
            return None
    else:
        # Lenient, like Postfix: some clients omit the angle brackets.
        path, _, tail = rest.partition(" ")
        if not path:
            return None
    return path.strip(), tail.split()


def parse_parameters(words: list[str]) -> dict[str, str | None] | None:
    """ESMTP ``KEY[=VALUE]`` parameters by upper-cased key; None if one is malformed."""
    parameters: dict[str, str | None] = {}
    for word in words:
        key, equals, value = word.partition("=")
        if not key.isascii() or not key.replace("-", "").isalnum() or (equals and not value):
            return None
        parameters[key.upper()] = value if equals else None
    return parameters


# Committee mail goes to the same few addresses again and again; validating one costs more than
# the rest of a RCPT command.
@functools.lru_cache(maxsize=4096)
def forward_path_problem(path: str) -> str | None:
    """Why a RCPT address is refused, in words; None if it is a plain ``local@domain`` address."""
    if not path:
        return "the address is empty"
    if path.startswith("@"):
        return "source routes (@relay:user@domain) are not accepted"
    if '"' in path or "\\" in path:
        return "quoted local parts are not accepted"
    local, at, domain = path.rpartition("@")
    if not at or not local or not domain:
        return "the address has no domain"
    if "@" in local:
        return "the address has more than one @"
    if "%" in local:
        return "the percent hack (user%host@relay) is not accepted"
    if "!" in local:
        return "bang paths (host!user) are not accepted"
    if domain.startswith("["):
        return "address literals (user@[192.0.2.1]) are not accepted"
    try:
        validate_email(path, check_deliverability=False, test_environment=True, allow_smtputf8=True)
    except EmailNotValidError as exc:
        return f"the address is not valid ({exc})"
    return None
