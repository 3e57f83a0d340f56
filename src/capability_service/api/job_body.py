"""Reading a job submission's JSON as it streams in, with every `data:` URI checked on the way.

A submission can carry hundreds of megabytes of base64 images. Read the usual way it would be held
three or four times at once (the raw body, its decoded text, the parsed strings, copies made to
validate and fingerprint them). Here the body is scanned as it arrives: each JSON string that starts
with `data:` goes into a buffer of its own, is measured while it grows, and becomes one Python string
when it ends; the rest of the document (a few kilobytes) is parsed by `json`. A data URI that would
decode to more than the per-source limit stops the read at once with a 413 naming its index in
`source_image_urls`, before the rest of the body is read.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import Receive, Scope

# A JSON string's text from a point outside any escape: runs of plain bytes and two-byte escapes (`\"` is
# one). It ends at the closing quote, at a backslash that ends the chunk (its escape goes on in the next
# one), or at the chunk's end. Possessive, so matching keeps no backtracking state.
_STRING_TEXT = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+', re.DOTALL)
_BACKSLASH = 0x5C
# Bytes of a data URI's payload that decode to nothing: whitespace, and the `%` of a percent-escape.
_NOT_PAYLOAD = b"% \t\r\n"
_DATA = b"data:"
# A data URI's text before its payload ("data:image/jpeg;base64,") is short; this is generous.
_HEADER_SLACK = 256
_SOURCES_KEY = b"source_image_urls"


class DataUriTooLarge(HTTPException):
    # An HTTPException, so FastAPI's body reading passes it through as is.
    def __init__(self, where: str, size: int, limit: int) -> None:
        super().__init__(
            413,
            detail=(
                f"{where}: the data: URI holds about {size} bytes, above the {limit} byte limit per source "
                "(SOURCE_MAX_BYTES); send a smaller image, or its URL"
            ),
        )


def payload_bytes(raw_chars: int, escapes: int) -> int:
    """Bytes a base64 payload of `raw_chars` characters decodes to, `escapes` of them being escape overhead."""
    return max(0, raw_chars - escapes) * 3 // 4


def _string_stop(chunk: bytes, start: int, end: int) -> int:
    """Where the string going on at `start` (outside any escape) stops in `chunk`: at its closing quote, at a
    backslash ending the chunk whose escape goes on in the next one, or at the chunk's end."""
    quote = chunk.find(b'"', start)
    stop = end if quote < 0 else quote
    if stop == start or chunk[stop - 1] != _BACKSLASH:
        # The byte before is a plain one or an escape's last: the quote (or the chunk's end) is outside any escape.
        return stop
    # After a backslash the quote may be escaped (`\"`) or close the string (`\\"`), and a chunk may end in
    # the middle of an escape: the pattern pairs each backslash with the byte after it, in one pass in C
    # however many escapes there are.
    match = _STRING_TEXT.match(chunk, start)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _overhead(piece: bytes) -> int:
    """Characters of `piece`, data URI text starting and ending outside any escape, that do not decode to bytes.

    Each JSON escape is one (`\\/`, `\\\\`, `\\u00e9`: its backslash), each percent-escape two, each whitespace
    one. In a run of backslashes, which starts outside any escape, the escapes are its pairs and a last
    odd one: counting `\\\\` left to right, without overlaps, finds those pairs, so every escape counts once.
    """
    overhead = 0
    backslashes = piece.count(b"\\")
    if backslashes:
        overhead = backslashes - piece.count(b"\\\\")
    # One pass deletes all of them; the `%`s count once more.
    overhead += len(piece) - len(piece.translate(None, _NOT_PAYLOAD)) + piece.count(b"%")
    return overhead


class _Scanner:
    """Splits a JSON document into its data URI strings and a small skeleton that refers to them."""

    def __init__(self, max_source_bytes: int) -> None:
        self.limit = max_source_bytes
        self.skeleton = bytearray()
        self.data_uris: list[bytearray] = []
        # A marker no sender can guess: a skeleton string equal to it plus an index is a data URI.
        self.marker = f"\x00data-uri-{secrets.token_hex(8)}:"
        self._in_string = False
        self._escaped = False
        self._current = bytearray()
        self._current_escapes = 0
        self._depth = 0
        # The top-level key just read, and the state of the `source_image_urls` array.
        self._last_key: bytes | None = None
        self._in_sources = False
        self._source_index = 0

    def feed(self, chunk: bytes) -> None:
        position = 0
        end = len(chunk)
        while position < end:
            if not self._in_string:
                quote = chunk.find(b'"', position)
                stop = end if quote < 0 else quote
                self._structure(chunk[position:stop])
                if quote < 0:
                    return
                self._in_string = True
                self._current.clear()
                self._current_escapes = 0
                position = quote + 1
                continue
            if self._escaped:
                # The byte after a backslash belongs to the escape, whatever it is.
                self._current += chunk[position : position + 1]
                self._escaped = False
                position += 1
                continue
            stop = _string_stop(chunk, position, end)
            self._grow(chunk[position:stop])
            if stop == end:
                return
            if chunk[stop] == _BACKSLASH:
                # The chunk ends with the first byte of an escape.
                self._current += b"\\"
                self._current_escapes += 1
                self._escaped = True
                return
            self._in_string = False
            position = stop + 1
            self._string_ended()

    def _grow(self, piece: bytes) -> None:
        # `piece` starts and ends outside any escape.
        self._current += piece
        if self._current[:5].lower() == _DATA and len(self._current) > 5:
            self._current_escapes += _overhead(piece)
            size = payload_bytes(len(self._current), self._current_escapes + _HEADER_SLACK)
            if size > self.limit:
                raise DataUriTooLarge(self._where(), size, self.limit)

    def _where(self) -> str:
        if self._in_sources and self._depth == 2:
            return f"source_image_urls[{self._source_index}]"
        return "a data: URI in the request"

    def _string_ended(self) -> None:
        text, self._current = self._current, bytearray()
        if self._in_sources and self._depth == 2:
            self._source_index += 1
        if text[:5].lower() == _DATA:
            # Kept as it came (no copy); it becomes a Python string once the document is parsed.
            index = len(self.data_uris)
            self.data_uris.append(text)
            self.skeleton += b'"' + f"{self.marker}{index}".encode().replace(b"\x00", b"\\u0000") + b'"'
        else:
            if self._depth == 1:
                self._last_key = bytes(text)
            self.skeleton += b'"' + text + b'"'

    def _structure(self, segment: bytes) -> None:
        # Between strings there are only brackets, separators, numbers and literals: counted, not parsed.
        if not segment:
            return
        self.skeleton += segment
        opened = segment.count(b"{") + segment.count(b"[")
        closed = segment.count(b"}") + segment.count(b"]")
        before = self._depth
        self._depth += opened - closed
        if before == 1 and self._depth == 2 and b"[" in segment and self._last_key == _SOURCES_KEY:
            self._in_sources = True
            self._source_index = 0
        elif self._depth < 2:
            self._in_sources = False

    def finish(self) -> Any:
        if self._in_string:
            raise json.JSONDecodeError("Unterminated string", "", len(self.skeleton))
        try:
            document = json.loads(self.skeleton)
        except json.JSONDecodeError:
            raise
        # Well-formed JSON Python still refuses: said here, as FastAPI would only say "error parsing the body".
        except UnicodeDecodeError:
            raise HTTPException(400, detail="the body is not valid UTF-8; send JSON encoded as UTF-8") from None
        except RecursionError:
            raise HTTPException(400, detail="the JSON is nested too deeply") from None
        except ValueError:
            # The one left: Python reads integers of at most 4300 digits.
            raise HTTPException(400, detail="a number in the JSON has too many digits") from None
        return self._restore(document)

    def _restore(self, node: Any) -> Any:
        if isinstance(node, str):
            if node.startswith(self.marker):
                index = int(node[len(self.marker) :])
                raw, self.data_uris[index] = self.data_uris[index], bytearray()
                return _as_text(raw)
            return node
        if isinstance(node, list):
            return [self._restore(item) for item in node]
        if isinstance(node, dict):
            return {self._restore(key): self._restore(value) for key, value in node.items()}
        return node


def _as_text(raw: bytearray) -> str:
    if b"\\" not in raw and raw.isascii():
        return raw.decode("ascii")
    # Escapes (`\/`, `\u00xx`) or other characters: the JSON decoder knows them all.
    text: str = json.loads(b'"' + raw + b'"')
    return text


async def read_job_json(chunks: AsyncIterator[bytes], max_source_bytes: int) -> Any:
    """The JSON document `chunks` make, each data URI in it checked against `max_source_bytes` as it arrives."""
    scanner = _Scanner(max_source_bytes)
    async for chunk in chunks:
        scanner.feed(chunk)
    return scanner.finish()


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


# What `body()` answers once the body was parsed as it streamed in: the bytes themselves are not kept.
_READ_AS_IT_CAME = b"{}"


class JobBodyRequest(Request):
    """A request whose JSON body is read by `read_job_json` instead of whole."""

    def __init__(self, scope: Scope, receive: Receive, max_source_bytes: int) -> None:
        super().__init__(scope, receive)
        self._max_source_bytes = max_source_bytes

    async def body(self) -> bytes:
        content_type = self.headers.get("content-type")
        if not _is_json(content_type):
            # Read as bytes, the JSON would fail as "not a valid dictionary"; the header is what to fix.
            raise HTTPException(
                400, detail=f"send the job as JSON with Content-Type: application/json (this body is {content_type})"
            )
        if not hasattr(self, "_json"):
            self._json = await read_job_json(self.stream(), self._max_source_bytes)
        return _READ_AS_IT_CAME

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            await self.body()
        return self._json


class JobBodyRoute(APIRoute):
    """Routes whose JSON bodies may carry data URIs: read with `JobBodyRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            limit: int = request.app.state.services.settings.source_max_bytes
            return await handler(JobBodyRequest(request.scope, request.receive, limit))

        return route_handler
