"""Mailing lists as an audience: which addresses act as lists, from the policy and from list headers.

Two sources, both plain data by the time a rule sees them: the list addresses and domains the policy
names (the ``list-reply-all`` rule's params), and the addresses learnt from journalled mail that a
list distributed (``List-Post: <mailto:...>``, and a To or Cc address whose ``local.domain`` is the
message's ``List-Id``), which the thread ledger keeps and the screener hands in as thread facts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from gateway.policy.audiences import mailbox_key
from gateway.policy.model import ParsedMessage

_MAILTO = re.compile(r"<\s*mailto:([^>?\s]+)", re.IGNORECASE)
_LIST_ID = re.compile(r"<\s*([^<>\s]+)\s*>\s*$")
# A list's header section is small; a bounded read keeps a hostile copy from costing much.
_HEADER_BYTES = 256 * 1024


def _header_section(content: bytes) -> bytes:
    head = content[:_HEADER_BYTES]
    end = head.find(b"\r\n\r\n")
    if end < 0:
        end = head.find(b"\n\n")
    return head if end < 0 else head[: end + 2]


def list_id_of(value: str) -> str | None:
    """The identifier of a ``List-Id`` value (``"Dev" <dev.example.org>`` -> ``dev.example.org``)."""
    found = _LIST_ID.search(" ".join(value.split()))
    if found is None:
        bare = value.strip().lower()
        return bare if bare and " " not in bare and "<" not in bare else None
    return found.group(1).lower().strip(".")


def address_matches_list_id(address: str, list_id: str) -> bool:
    """Whether ``address`` is the posting address ``list_id`` names (``dev@example.org`` ~
    ``dev.example.org``; RFC 2919 recommends the id be built that way)."""
    local, at, domain = mailbox_key(address).rpartition("@")
    return bool(at and local) and f"{local}.{domain}" == list_id


def learnt_list_addresses(content: bytes) -> tuple[str, ...]:
    """The list addresses a message distributed by a mailing list shows: its ``List-Post`` mailto
    address, and each To/Cc address its ``List-Id`` names. Empty for a message without them."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(_header_section(content))
    found: dict[str, None] = {}
    for value in headers.get_all("List-Post") or ():
        for address in _MAILTO.findall(str(value)):
            key = mailbox_key(address)
            if "@" in key:
                found[key] = None
    list_ids = {ident for value in headers.get_all("List-Id") or () if (ident := list_id_of(str(value)))}
    if list_ids:
        visible = [str(v) for field in ("To", "Cc") for v in headers.get_all(field) or ()]
        for _name, address in getaddresses(visible):
            if any(address_matches_list_id(address, ident) for ident in list_ids):
                found[mailbox_key(address)] = None
    return tuple(found)


def is_configured_list(address: str, addresses: Iterable[str], domains: Iterable[str]) -> bool:
    """Whether ``address`` is a configured list: one of ``addresses`` (a sub-address such as
    ``dev+tag@`` counts too) or any address at one of ``domains`` or their subdomains."""
    key = mailbox_key(address)
    local, _at, domain = key.rpartition("@")
    plain = f"{local.split('+', 1)[0]}@{domain}"
    if any(mailbox_key(candidate) in {key, plain} for candidate in addresses):
        return True
    labels = domain.split(".")
    suffixes = {".".join(labels[start:]) for start in range(len(labels))}
    return any(d.strip().lower().strip(".") in suffixes for d in domains)


def recipients_of(message: ParsedMessage, rcpt_tos: Iterable[str]) -> frozenset[str]:
    """Every recipient of a message, as compared: the envelope's and To, Cc and Bcc's."""
    visible = (mailbox.address for mailbox in (*message.to, *message.cc, *message.bcc))
    return frozenset(key for key in map(mailbox_key, (*rcpt_tos, *visible)) if key)
