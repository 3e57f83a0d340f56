"""Job submissions read as they stream in: the document they make, and data URIs measured as they grow."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from types import FrameType

import pytest

from capability_service.api.job_body import DataUriTooLarge, payload_bytes, read_job_json

# Every kind of JSON escape, in keys, in data URIs and in other strings; runs of backslashes before a
# quote (an escaped quote, and an escaped backslash closing its string); non-ASCII text as it is.
DOCUMENT = (
    r'{"job_id": "a\\\\b\"c\/d\u00e9\ud83d\ude00\n\t\b\f\r", "type": "t\\", "\\\"key\\": ["\\\\\\\"", "", "\"", "\\"],'
    r' "source_image_urls": ["data:image/png;base64,QUJD\/RA==", "DATA:,a%20b\\\\\"\u0041 \\", "https:\/\/x.test\/a",'
    r' "data:,\u0000\\\\\\"], "nested": {"data:,key\/": "data:,x\\", "d": [["data:"], "\\\"\\\"\\"]},'
    ' "n": [1, -2.5e3, true, false, null], "\u00e9t\u00e9": "\U0001f600"}'
).encode()


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def split_at(data: bytes, offset: int) -> AsyncIterator[bytes]:
    yield data[:offset]
    yield data[offset:]


async def test_a_document_split_anywhere_reads_as_json_reads_it() -> None:
    expected = json.loads(DOCUMENT)
    # An escape's two bytes in different pieces, a backslash ending a piece, a quote starting one.
    for offset in range(len(DOCUMENT) + 1):
        assert await read_job_json(split_at(DOCUMENT, offset), 1000) == expected, offset
    for size in (1, 2, 3, 5, 7):
        assert await read_job_json(pieces(DOCUMENT, size), 1000) == expected, size


LIMIT = 300
# A data URI of header plus `plain` characters that each decode to a byte: the most the limit lets through.
HEADER = "data:,"
PLAIN_FITTING = max(plain for plain in range(2000) if payload_bytes(len(HEADER) + plain, 256) <= LIMIT)


def data_uri_document(text: str) -> bytes:
    return b'{"source_image_urls": ["data:,small", "' + (HEADER + text).encode() + b'"]}'


@pytest.mark.parametrize(
    ("piece", "counted"),
    [
        ("\\\\", 1),  # each escape is one character of overhead, once: `\\` pairs do not count as nothing
        ("\\/", 1),
        ('\\"', 1),
        ("\\u00e9", 5),
        ("\\\\\\\\\\/", 3),
        ("%41", 1),  # a percent-escape is one byte
        (" ", 0),  # whitespace is not payload
        ("\\\\%41\\/ ", 3),
    ],
)
async def test_each_escape_counts_once_toward_a_data_uris_size(piece: str, counted: int) -> None:
    # Escaped characters fill the data URI up to the limit, plain ones make up the rest; one more is too many.
    repeats = PLAIN_FITTING // 2 // max(counted, 1)
    filler = PLAIN_FITTING - repeats * counted
    fitting = data_uri_document(piece * repeats + "A" * filler)
    too_big = data_uri_document(piece * repeats + "A" * (filler + 1))
    for size in (1, 2, 3, 64, len(too_big)):
        assert await read_job_json(pieces(fitting, size), LIMIT) == json.loads(fitting)
        with pytest.raises(DataUriTooLarge) as refused:
            await read_job_json(pieces(too_big, size), LIMIT)
        assert str(refused.value.detail).startswith("source_image_urls[1]: "), refused.value.detail


async def test_a_data_uri_over_the_limit_stops_the_read_in_the_piece_where_it_passes_it() -> None:
    payload = "QUJD/RA+" * 4000
    plain = json.dumps({"source_image_urls": ["data:,a", "data:image/png;base64," + payload, "data:,b" * 20_000]})
    read = 0

    async def counted(data: bytes) -> AsyncIterator[bytes]:
        nonlocal read
        async for piece in pieces(data, 4096):
            read += 1
            yield piece

    # Unescaped, and with every `/` written `\/`: each escape is one character that decodes to nothing.
    for body in (plain.encode(), plain.replace("/", "\\/").encode()):
        start = body.index(b"data:image")
        passed = 1
        while payload_bytes(passed * 4096 - start, body.count(b"\\", start, passed * 4096) + 256) <= 20_000:
            passed += 1
        read = 0
        with pytest.raises(DataUriTooLarge) as refused:
            await read_job_json(counted(body), 20_000)
        assert str(refused.value.detail).startswith("source_image_urls[1]: "), refused.value.detail
        assert read == passed < len(body) // 4096


async def test_escapes_are_scanned_in_bulk_not_one_by_one() -> None:
    # A data URI written with every `/` escaped, as PHP's json_encode does, is read in as many Python calls
    # as the same data URI unescaped: a body with a million escapes must not hold the event loop for seconds.
    payload = "QUJD/RA+" * 16_000
    plain = json.dumps({"source_image_urls": ["data:image/png;base64," + payload]}).encode()
    escaped = plain.replace(b"/", b"\\/")
    calls: list[int] = []
    for body in (plain, escaped):
        count = 0

        def profile(frame: FrameType, event: str, arg: object) -> None:
            nonlocal count
            count += event in ("call", "c_call")

        sys.setprofile(profile)
        try:
            document = await read_job_json(pieces(body, 65536), 10**9)
        finally:
            sys.setprofile(None)
        assert document == json.loads(body)
        calls.append(count)
    assert escaped.count(b"\\") > 16_000
    assert calls[1] < calls[0] + 100, calls
