"""Messages between the gateway and the processes it starts: length-prefixed pickles on a socket pair.

Both ends are this program (the gateway starts its policy workers and its delivery process itself,
with ``multiprocessing``'s spawn), so pickle is safe here; nothing else ever writes to these sockets.
Each frame is a request id (0 when unused), the payload's length, then the pickled payload.
"""

from __future__ import annotations

import asyncio
import io
import pickle
import struct

_HEADER = struct.Struct("!QI")  # request id, payload length


def encode_frame(payload: object, request_id: int = 0) -> bytes:
    """One frame holding ``payload``."""
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(request_id, len(data)) + data


def read_frame(stream: io.BufferedIOBase) -> tuple[int, object] | None:
    """The next frame from a blocking stream; None at end of input (the other end has gone)."""
    header = stream.read(_HEADER.size)
    if header is None or len(header) < _HEADER.size:
        return None
    request_id, length = _HEADER.unpack(header)
    data = stream.read(length)
    if data is None or len(data) < length:
        return None
    return request_id, pickle.loads(data)  # noqa: S301 - written by our own process (module docstring)


class FrameBuffer:
    """Frames out of a byte stream that arrives in arbitrary pieces (an ``asyncio.Protocol``'s
    ``data_received``): cheaper than awaiting ``readexactly`` twice per frame."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, object]]:
        """Add ``data``; return every frame now complete, in order."""
        buffer = self._data
        buffer += data
        frames: list[tuple[int, object]] = []
        start = 0
        while len(buffer) - start >= _HEADER.size:
            request_id, length = _HEADER.unpack_from(buffer, start)
            end = start + _HEADER.size + length
            if len(buffer) < end:
                break
            payload = buffer[start + _HEADER.size : end]
            frames.append((request_id, pickle.loads(payload)))  # noqa: S301 - see the module docstring
            start = end
        if start:
            del buffer[:start]
        return frames


async def read_frame_async(reader: asyncio.StreamReader) -> tuple[int, object] | None:
    """The next frame from an asyncio stream; None at end of input or when the connection broke."""
    try:
        request_id, length = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        data = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        return None
    return request_id, pickle.loads(data)  # noqa: S301 - written by our own process (module docstring)
