"""What reading an attachment yields (texts, files inside it, unreadable parts) and the work it may do."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_ARCHIVE_MEMBERS = 1000  # files inside all attachments of one message (archive members, embeddings)
MAX_ARCHIVE_MEMBER_BYTES = 20_000_000  # one file, uncompressed
MAX_ARCHIVE_TOTAL_BYTES = 50_000_000  # all files inside all attachments of one message, uncompressed
MAX_ARCHIVE_DEPTH = 3  # files inside files inside files
MAX_PDF_PAGES = 1000
MAX_PDF_CONTENT_BYTES = 20_000_000  # page content streams of one PDF, decompressed (text extraction is slow)


@dataclass(frozen=True)
class Text:
    """Text read from a file; ``where`` narrows the file's location ("" = the file itself)."""

    text: str
    where: str = ""


@dataclass(frozen=True)
class Embedded:
    """A file found inside another (an archive member, an email's attachment): read it in turn."""

    name: str  # as the container names it (sender-chosen: scanned as text, never shown)
    data: bytes
    where: str  # sender-safe, e.g. "file 2 of the archive"


@dataclass(frozen=True)
class Unreadable:
    """Something inside a file that cannot be read, and why (a plain phrase quoting nothing)."""

    reason: str
    kind: str  # encrypted | archive | binary | media
    where: str = ""


@dataclass
class Extraction:
    texts: list[Text] = field(default_factory=list)
    files: list[Embedded] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    def text(self, text: str, where: str = "") -> None:
        if text and not text.isspace():
            self.texts.append(Text(text, where))

    def cannot_read(self, reason: str, kind: str, where: str = "") -> None:
        self.unreadable.append(Unreadable(reason, kind, where))


@dataclass
class Budget:
    """How many more files and bytes the attachments of one message may unpack (zip bombs lie)."""

    files: int = field(default_factory=lambda: MAX_ARCHIVE_MEMBERS)
    total_bytes: int = field(default_factory=lambda: MAX_ARCHIVE_TOTAL_BYTES)
    file_bytes: int = field(default_factory=lambda: MAX_ARCHIVE_MEMBER_BYTES)

    def allowed(self) -> int:
        """The most bytes the next file may have."""
        return max(0, min(self.file_bytes, self.total_bytes))

    def spend(self, size: int) -> None:
        self.total_bytes -= size

    def count_files(self, count: int) -> bool:
        """Take ``count`` files from the budget; False (and nothing taken) when they do not fit."""
        if count > self.files:
            return False
        self.files -= count
        return True


TOO_LARGE = "a file inside an attachment too large to inspect"
TOO_MANY = f"attachments holding too many files (limit {MAX_ARCHIVE_MEMBERS})"
