"""The thread ledger's logic, shared by both backends: what a row holds and how a parent is found.

``ThreadLedger`` turns a message into a row (normalised ids, participants as ``[field, name,
address]``) and picks a reply's parent from the candidates (the first known In-Reply-To id, else
the last known References id); a backend only stores a row (``_store``) and fetches candidates
(``_fetch``): SQLite in ``ledger``, PostgreSQL in ``postgresql/ledger``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from gateway.policy.model import Address, ParsedMessage, ThreadFacts

# A reply's References can list hundreds of ids; the parent is among the last few.
MAX_PARENT_CANDIDATES = 200
PARTICIPANT_FIELDS = ("from", "to", "cc")

Participants = list[list[str]]  # [[field, display name, address], ...]


def normalise_message_id(value: str) -> str | None:
    """``<abc@host>`` and ``abc@host`` are the same id; whitespace is folding, not content."""
    stripped = "".join(value.split()).strip("<>")
    return stripped or None


def normalised_ids(values: Iterable[str]) -> list[str]:
    return [key for value in values if (key := normalise_message_id(value)) is not None]


def parent_candidates(in_reply_to: Sequence[str], references: Sequence[str]) -> list[str]:
    """The ids a reply's parent may have, most likely first (In-Reply-To, then References from the end)."""
    candidates: list[str] = []
    for value in (*in_reply_to, *reversed(references)):
        key = normalise_message_id(value)
        if key is not None and key not in candidates:
            candidates.append(key)
        if len(candidates) >= MAX_PARENT_CANDIDATES:
            break
    return candidates


class ThreadLedger:
    """``record``, ``record_message``, ``lookup`` and ``lookup_parent`` over a backend's two calls."""

    def _store(
        self,
        key: str,
        in_reply_to: list[str],
        references: list[str],
        participants: Participants,
        case: str | None,
        when: datetime | None,
    ) -> None:
        """Insert or replace the row of ``key`` (keeping a known case when ``case`` is None)."""
        raise NotImplementedError

    def _fetch(self, candidates: list[str]) -> Mapping[str, tuple[Iterable[Sequence[str]], str | None]]:
        """The known rows among ``candidates``: id -> (participants, case)."""
        raise NotImplementedError

    def record(
        self,
        message_id: str,
        *,
        in_reply_to: Sequence[str] = (),
        references: Sequence[str] = (),
        from_: Iterable[Address] = (),
        to: Iterable[Address] = (),
        cc: Iterable[Address] = (),
        case: str | None = None,
        when: datetime | None = None,
    ) -> bool:
        """Record one message from plain values; False if it has no usable Message-ID.

        Recording the same Message-ID again (a retried send, or a journal copy of a message we
        relayed) replaces the participants but never forgets a case already known.
        """
        key = normalise_message_id(message_id)
        if key is None:
            return False
        participants = [
            [field, address.name, address.address]
            for field, addresses in zip(PARTICIPANT_FIELDS, (from_, to, cc), strict=True)
            for address in addresses
        ]
        self._store(key, normalised_ids(in_reply_to), normalised_ids(references), participants, case, when)
        return True

    def record_message(self, message: ParsedMessage, *, case: str | None = None) -> bool:
        """Record a parsed message (as relayed); see ``record``."""
        if message.message_id is None:
            return False
        return self.record(
            message.message_id,
            in_reply_to=message.in_reply_to,
            references=message.references,
            from_=message.from_,
            to=message.to,
            cc=message.cc,
            case=case,
        )

    def lookup(self, message: ParsedMessage) -> ThreadFacts:
        """Facts about the message's parent: the first known In-Reply-To id, else the last known
        References id. Unknown parent (or no parent ids at all): ``ThreadFacts()``."""
        return self.lookup_parent(message.in_reply_to, message.references)

    def lookup_parent(self, in_reply_to: Sequence[str], references: Sequence[str]) -> ThreadFacts:
        """``lookup`` from plain id lists."""
        candidates = parent_candidates(in_reply_to, references)
        if not candidates:
            return ThreadFacts()
        found = self._fetch(candidates)
        for key in candidates:
            if key in found:
                participants, case = found[key]
                return ThreadFacts(
                    parent_known=True,
                    parent_participants=tuple(
                        Address(name=name, address=address) for _field, name, address in participants
                    ),
                    case=case,
                )
        return ThreadFacts()
