"""The one multipart module STOW-RS and WADO-RS share: the streaming parser and writer."""

from __future__ import annotations

import io
import time

import pytest

from tests.support.http import encode_multipart
from viewer import multipart
from viewer.multipart import LimitExceeded, MultipartError, MultipartReader


def parse(body: bytes, boundary: str = "b1", **limits: int) -> list[multipart.Part]:
    return list(MultipartReader(io.BytesIO(body), boundary, **limits))


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 65536])
def test_parts_survive_any_chunking(chunk_size: int) -> None:
    bodies = [b"", b"a", b"\r\n--b", b"--b1 not a delimiter without CRLF", b"x" * 1000 + b"\r\n-", b"\r\n\r\n"]
    body = encode_multipart([({"Content-Type": "application/dicom", "X-N": str(i)}, b) for i, b in enumerate(bodies)],
                            "b1")
    parts = list(MultipartReader(io.BytesIO(body), "b1", chunk_size=chunk_size))
    assert [p.body for p in parts] == bodies
    assert [p.headers["x-n"] for p in parts] == [str(i) for i in range(len(bodies))]
    assert all(p.content_type == "application/dicom" for p in parts)


def test_preamble_epilogue_padding_and_headerless_parts() -> None:
    body = b"preamble text\r\n--b1  \t\r\n\r\nfirst\r\n--b1\r\nContent-Type: x/y\r\n\r\nsecond\r\n--b1--\r\nepilogue"
    parts = parse(body)
    assert [(p.headers, p.body) for p in parts] == [({}, b"first"), ({"content-type": "x/y"}, b"second")]


def test_boundary_with_allowed_punctuation() -> None:
    boundary = "a'()+_,-./:=?b"
    body = encode_multipart([({}, b"data")], boundary)
    assert [p.body for p in parse(body, boundary)] == [b"data"]


@pytest.mark.parametrize("boundary", ["", "x" * 71, "bad boundary ", "a\"b", "a;b"])
def test_invalid_boundaries(boundary: str) -> None:
    with pytest.raises(MultipartError):
        MultipartReader(io.BytesIO(b""), boundary)


@pytest.mark.parametrize("body", [
    b"", b"--b1", b"--b1\r\n\r\nno end", b"--b1\r\nno-colon\r\n\r\nx\r\n--b1--", b"--b1x\r\n\r\nx\r\n--b1--",
    b"--b1\r\n" + b"H: v\r\n" * 40 + b"\r\nx\r\n--b1--", b"--b1\r\nH: " + b"v" * 20000 + b"\r\n\r\nx\r\n--b1--",
    b"x" * 70_000 + b"\r\n--b1\r\n\r\nx\r\n--b1--",
])
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MultipartError) as info:
        parse(body)
    assert info.value.status == 400


def test_limits() -> None:
    body = encode_multipart([({}, b"x")] * 11, "b1")
    assert len(parse(body, max_parts=11)) == 11
    with pytest.raises(LimitExceeded) as info:
        parse(body, max_parts=10)
    assert info.value.status == 413
    with pytest.raises(LimitExceeded):
        parse(body, max_total_bytes=100, chunk_size=16)
    big = encode_multipart([({}, b"y" * 5000), ({}, b"small")], "b1")
    parts = parse(big, max_part_bytes=4096, chunk_size=1000)
    assert parts[0].too_large and parts[0].body == b"" and parts[0].size == 5000
    assert not parts[1].too_large and parts[1].body == b"small"


def test_linear_time_on_hostile_bodies() -> None:
    started = time.monotonic()
    crlfs = b"--b1\r\n\r\n" + b"\r\n" * 3_000_000 + b"\r\n--b1--\r\n"
    assert len(parse(crlfs)[0].body) == 6_000_000
    dashes = b"--b1\r\n\r\n" + b"\r\n--b" * 500_000 + b"\r\n--b1--\r\n"
    assert len(parse(dashes)[0].body) == 2_500_000
    assert len(parse(encode_multipart([({}, b"")] * 20_000, "b1"), max_parts=20_000)) == 20_000
    assert time.monotonic() - started < 15


def test_drain_reads_what_is_left() -> None:
    reader = MultipartReader(io.BytesIO(b"--b1\r\n\r\nx" + b"z" * 1000), "b1", chunk_size=10)
    assert reader.drain(10_000) is True
    reader = MultipartReader(io.BytesIO(b"z" * 1000), "b1", chunk_size=10)
    assert reader.drain(100) is False


def test_writer_round_trips_through_the_reader() -> None:
    boundary = multipart.new_boundary()
    bodies = [b"\r\n--" + boundary.encode()[:-1], b"", bytes(range(256)) * 100]
    stream = multipart.write_parts(boundary, (({"Content-Type": "application/octet-stream"}, b) for b in bodies))
    body = b"".join(stream)
    assert body.startswith(f"--{boundary}\r\n".encode()) and body.endswith(f"\r\n--{boundary}--\r\n".encode())
    assert [p.body for p in parse(body, boundary)] == bodies
    content_type = multipart.content_type("application/dicom", boundary)
    assert content_type == f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_writer_is_lazy() -> None:
    produced = []

    def parts():  # type: ignore[no-untyped-def]
        for i in range(3):
            produced.append(i)
            yield {"Content-Type": "a/b"}, b"x"

    stream = multipart.write_parts("b1", parts())
    next(stream)
    assert produced == [0]
