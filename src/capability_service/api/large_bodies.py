"""A bounded number of large request bodies read at once.

A job submission may be hundreds of megabytes of data: URIs, and reading one costs memory in
proportion. Bodies above `threshold` bytes take a turn (at most `slots` at once, per process) before
their first byte is read, and keep it until their answer is sent; a body that gets no turn within
`wait` seconds is answered 503 with Retry-After. Small bodies never wait. A body sent without
Content-Length takes its turn once more than `threshold` bytes of it have arrived.
"""

from __future__ import annotations

import asyncio
import logging
import math

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class NoTurn(HTTPException):
    """503: a large body found no turn in time. An HTTPException, so FastAPI's body reading passes it on."""

    def __init__(self, slots: int, wait: float) -> None:
        retry_after = max(1, math.ceil(wait))
        super().__init__(
            503,
            detail=(
                f"the service is already reading {slots} large submissions at once (MAX_CONCURRENT_LARGE_BODIES); "
                f"retry in {retry_after} s, or send fewer images per job, or image URLs instead of data: URIs"
            ),
            headers={"Retry-After": str(retry_after)},
        )


class LargeBodyTurns:
    """The turns: at most `slots` large bodies at once, each waiting at most `wait` seconds for one."""

    def __init__(self, *, threshold: int, slots: int, wait: float) -> None:
        self.threshold = threshold
        self.slots = slots
        self.wait = wait
        self._turns = asyncio.Semaphore(slots)
        # Large bodies being read or answered now.
        self.active = 0

    async def take(self) -> None:
        """Wait for a turn; raises `NoTurn` after `wait` seconds without one."""
        try:
            async with asyncio.timeout(self.wait):
                await self._turns.acquire()
        except TimeoutError:
            log.warning("a large request body found no turn within %g s (%d being read)", self.wait, self.active)
            raise NoTurn(self.slots, self.wait) from None
        self.active += 1

    def give_back(self) -> None:
        self.active -= 1
        self._turns.release()


class LargeBodyGate:
    """ASGI middleware: bodies over the threshold on `paths` are read only with a turn of `turns`."""

    def __init__(self, app: ASGIApp, *, paths: frozenset[str], turns: LargeBodyTurns) -> None:
        self.app = app
        self.paths = paths
        self.turns = turns

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, refusal: NoTurn) -> None:
        response = JSONResponse({"detail": refusal.detail}, status_code=refusal.status_code, headers=refusal.headers)
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") not in self.paths:
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit():
                declared = int(value)
        if declared is None:
            await self._unknown_length(scope, receive, send)
            return
        if declared <= self.turns.threshold:
            await self.app(scope, receive, send)
            return
        try:
            await self.turns.take()
        except NoTurn as refusal:
            await self._refuse(scope, receive, send, refusal)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.turns.give_back()

    async def _unknown_length(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Chunked: the size shows only as it arrives; the first `threshold` bytes are read without a turn.
        received = 0
        holding = False

        async def counting_receive() -> Message:
            nonlocal received, holding
            message = await receive()
            if message["type"] == "http.request" and not holding:
                received += len(message.get("body", b""))
                if received > self.turns.threshold:
                    # Raised into the body's reader, which answers it (503 with Retry-After).
                    await self.turns.take()
                    holding = True
            return message

        try:
            await self.app(scope, counting_receive, send)
        finally:
            if holding:
                self.turns.give_back()
