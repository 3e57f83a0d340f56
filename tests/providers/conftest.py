"""Fixtures for the remote model tests: running fake model servers and a sleep that keeps a log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.fakes.gemini_server import GeminiFake
from tests.fakes.openai_server import OpenAIFake

GEMINI_KEY = "AIzaTest-gemini-key-0123456789"
OPENAI_KEY = "sk-test-openai-key-0123456789"


@pytest.fixture
def gemini() -> Iterator[GeminiFake]:
    with GeminiFake(api_key=GEMINI_KEY).running() as fake:
        yield fake


@pytest.fixture
def openai() -> Iterator[OpenAIFake]:
    with OpenAIFake(api_key=OPENAI_KEY).running() as fake:
        yield fake


class SleepLog:
    """Really sleeps, and remembers each requested pause (the provider's backoff decisions)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(seconds)


@pytest.fixture
def sleep_log() -> SleepLog:
    return SleepLog()
