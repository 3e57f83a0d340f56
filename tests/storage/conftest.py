"""A SeaweedFS process shared by the storage tests; in CI a missing `weed` fails, never skips."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.seaweed import Seaweed, seaweed_server
from tests.support.servers import required


@pytest.fixture(scope="session")
def seaweed() -> Iterator[Seaweed]:
    with required(seaweed_server(), "SeaweedFS") as server:
        yield server
