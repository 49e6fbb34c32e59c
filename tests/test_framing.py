"""Frames between the gateway and its processes survive any split of the byte stream."""

from __future__ import annotations

import io
import itertools

from hypothesis import given
from hypothesis import strategies as st

from gateway.framing import FrameBuffer, encode_frame, read_frame

payloads = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2**64 - 1),
        st.one_of(st.binary(max_size=300), st.text(max_size=50), st.none(), st.lists(st.integers())),
    ),
    max_size=8,
)


@given(payloads, st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_a_frame_buffer_yields_every_frame_whatever_the_pieces(
    frames: list[tuple[int, object]], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(payload, request_id) for request_id, payload in frames)
    positions = sorted({min(cut, len(stream)) for cut in cuts} | {0, len(stream)})
    buffer = FrameBuffer()
    received: list[tuple[int, object]] = []
    for start, end in itertools.pairwise(positions):
        received.extend(buffer.feed(stream[start:end]))
    assert received == frames


def test_an_incomplete_frame_waits_for_the_rest() -> None:
    frame = encode_frame({"a": 1}, 7)
    buffer = FrameBuffer()
    assert buffer.feed(frame[:5]) == []
    assert buffer.feed(frame[5:-1]) == []
    assert buffer.feed(frame[-1:] + encode_frame("next", 8)) == [(7, {"a": 1}), (8, "next")]


def test_blocking_reader_reads_the_same_frames() -> None:
    stream = io.BytesIO(encode_frame("one", 1) + encode_frame(b"two", 2))
    assert read_frame(stream) == (1, "one")
    assert read_frame(stream) == (2, b"two")
    assert read_frame(stream) is None
