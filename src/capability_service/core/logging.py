"""Logging set-up: one line per record, no secrets (keys are never passed to a logger)."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # libvips narrates every operation at INFO; keep its warnings and errors only.
    logging.getLogger("pyvips").setLevel(max(logging.WARNING, logging.getLevelName(level)))
