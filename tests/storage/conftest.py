"""A SeaweedFS process shared by the storage tests; in CI a missing `weed` fails, never skips."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.seaweed import Seaweed, seaweed_server
from tests.support.servers import in_ci


@pytest.fixture(scope="session")
def seaweed() -> Iterator[Seaweed]:
    try:
        with seaweed_server() as server:
            yield server
    except RuntimeError as exc:
        if in_ci():
            pytest.fail(f"SeaweedFS is required in CI: {exc}")
        pytest.skip(str(exc))
