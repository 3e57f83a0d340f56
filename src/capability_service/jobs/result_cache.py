"""Reuse of stored results: the same source bytes through the same config and pipeline cost no processing.

Entries are kept per tenant, keyed by a digest of the job type, the validated config (defaults filled
in, so two spellings of one request agree), the pipeline version and the source's bytes. An entry is a small JSON
object stored next to the results (`result-cache/{tenant}/{digest}.json`, never served by `/files`)
naming the result it was made for and that result's own digest; a hit copies those bytes to the new
job's result key, after checking them against the digest (a job id reused since may have replaced
them). Entries older than `RESULT_CACHE_TTL_SECONDS` are misses and are written again. The cache adds
no image bytes of its own: an entry lives as long as the result it names.

Plugins say what may not be reused (`BasePlugin.cacheable`): a remote model's generation without a seed
differs every time, so it is never served from here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from capability_service.imaging.types import EncodedImage, OutputFormat
from capability_service.jobs.models import Job
from capability_service.plugins.base import BasePlugin
from capability_service.storage.base import Storage, StorageError
from capability_service.storage.keys import safe_segment

log = logging.getLogger(__name__)

# Bump when any pipeline's output for the same input and config changes, so older entries miss.
PIPELINE_VERSION = "2026-11-29.2"
CACHE_PREFIX = "result-cache"


@dataclass(frozen=True, slots=True)
class CacheHit:
    result: EncodedImage
    # The result the entry was made for; the new job's result is a copy under its own key.
    origin_key: str


class ResultCache:
    def __init__(self, storage: Storage, *, enabled: bool, ttl_seconds: float) -> None:
        self.storage = storage
        self.enabled = enabled
        self.ttl_seconds = ttl_seconds

    def key_for(self, job: Job, plugin: BasePlugin, config: BaseModel, source: bytes) -> str | None:
        """The entry key of this image's result, or None when it may not be reused."""
        if not self.enabled or not plugin.cacheable(job.type, config):
            return None
        spec = json.dumps(
            {"type": job.type, "config": config.model_dump(mode="json", by_alias=True), "pipeline": PIPELINE_VERSION},
            sort_keys=True,
            separators=(",", ":"),
        )
        digest = hashlib.sha256(spec.encode() + b"\0" + hashlib.sha256(source).digest()).hexdigest()
        return f"{CACHE_PREFIX}/{safe_segment(job.tenant, fallback='tenant')}/{digest}.json"

    async def lookup(self, key: str) -> CacheHit | None:
        """The stored result for `key`, or None (no entry, expired, or its result is gone or replaced)."""
        try:
            entry: dict[str, Any] = json.loads(await self.storage.get(key))
            if time.time() - float(entry["created_at"]) > self.ttl_seconds:
                return None
            data = await self.storage.get(str(entry["result_key"]))
        except KeyError:
            return None
        except StorageError as exc:
            # The store itself failing (an outage) says nothing about the entry: the image is processed.
            log.warning("result cache look-up failed, processing the image: %s", exc)
            return None
        except (ValueError, TypeError) as exc:
            log.warning("result cache entry %s unusable: %s", key, exc)
            return None
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            return None
        fmt: OutputFormat = entry["format"]
        result = EncodedImage(data, fmt, int(entry["width"]), int(entry["height"]), dict(entry.get("metadata", {})))
        return CacheHit(result, str(entry["result_key"]))

    async def remember(self, key: str, result_key: str, result: EncodedImage) -> None:
        """Write the entry for a result just stored; a failure only costs a later miss."""
        entry = {
            "result_key": result_key,
            "sha256": hashlib.sha256(result.data).hexdigest(),
            "format": result.format,
            "width": result.width,
            "height": result.height,
            "metadata": result.metadata,
            "created_at": time.time(),
        }
        try:
            await self.storage.put(key, json.dumps(entry).encode(), "application/json")
        except StorageError as exc:
            log.warning("result cache entry %s not written: %s", key, exc)
