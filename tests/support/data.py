"""The test suite's constants and real photos (`tests/data`), importable from any test or benchmark."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
API_KEY = "test-key-0123456789"
AUTH = {"X-API-Key": API_KEY}


def read_image(name: str) -> bytes:
    return (DATA / name).read_bytes()
