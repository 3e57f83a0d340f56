"""One image of a job, end to end: read the source, run the plugin, store the result.

Shared by the in-process engine and the Redis workers, so both behave the same per image.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from pydantic import BaseModel

from capability_service.core.metrics import ErrorClass, cache_lookup
from capability_service.imaging.types import ImageError
from capability_service.jobs.cpu import CpuExecutor
from capability_service.jobs.image_metrics import ImageRun
from capability_service.jobs.marketplace import marketplace_checks
from capability_service.jobs.models import ImageOutcome, ImageStatus, Job
from capability_service.jobs.result_cache import ResultCache
from capability_service.plugins.base import BasePlugin, ProcessContext
from capability_service.providers.base import ProviderError
from capability_service.sources.errors import SourceError
from capability_service.sources.fetch import SourceFetcher
from capability_service.storage.base import Storage, StorageError
from capability_service.storage.keys import owner_prefix, result_key
from capability_service.storage.retry import put_with_retry

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ImagePipeline:
    fetcher: SourceFetcher
    storage: Storage
    cpu: CpuExecutor
    image_timeout: float
    # Always there (a disabled cache misses every look-up): one code path whether or not it is on.
    cache: ResultCache
    storage_retry_seconds: float = 0.0

    async def run(self, job: Job, index: int, plugin: BasePlugin, config: BaseModel) -> ImageOutcome:
        """Process one image; every expected failure becomes this image's error, never an exception.

        The image's source facts (an Ozon selection's offer_id, product_id, position) go into its
        metadata whatever the outcome, so a failed picture is still traceable to its product.
        """
        run = ImageRun(job.type)
        with run.in_flight():
            try:
                outcome, error = await self._run(job, index, plugin, config, run)
            except asyncio.CancelledError:
                # The job was cancelled, or the worker is stopping (the image goes back to the queue).
                run.finish("cancelled", "cancelled")
                raise
        run.finish("succeeded" if error == "none" else "failed", error)
        facts = job.facts_of(index)
        if facts:
            outcome.metadata = {**outcome.metadata, **facts}
        return outcome

    async def _run(
        self, job: Job, index: int, plugin: BasePlugin, config: BaseModel, run: ImageRun
    ) -> tuple[ImageOutcome, ErrorClass]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.image_timeout) as limit:
                # Jobs read stored results of their own tenant's same user only.
                owner = owner_prefix(job.tenant, job.user_id)

                async def read_source(url: str) -> bytes:
                    return (await self.fetcher.fetch(url, owner=owner)).data

                with run.stage("fetch"):
                    source = await self.fetcher.fetch(job.source_image_urls[index], owner=owner)
                cache_key = self.cache.key_for(job, plugin, config, source.data)
                hit = await self.cache.lookup(cache_key) if cache_key is not None else None
                if cache_key is not None:
                    cache_lookup("miss" if hit is None else "hit")
                if hit is not None:
                    result = hit.result
                else:
                    ctx = ProcessContext(run_cpu=self.cpu.for_tenant(job.tenant), read_source=read_source)
                    calling = time.perf_counter()
                    result = await plugin.process(job.type, config, source.data, ctx)
                    run.plugin_call(time.perf_counter() - calling, result.metadata)
                marketplace = await marketplace_checks(result, job.facts_of(index), self.cpu.for_tenant(job.tenant))
                key = result_key(job.tenant, job.user_id, job.job_id, index, result.format)
                with run.stage("store"):
                    # A processed image outlasts a short storage outage, within the image's own time limit.
                    stored = await put_with_retry(
                        self.storage, key, result.data, result.content_type, window=self._retry_window(limit)
                    )
                if cache_key is not None and hit is None:
                    await self.cache.remember(cache_key, stored.key, result)
        except TimeoutError:
            return self._failed(index, f"processing took longer than {self.image_timeout:.0f} s"), "timeout"
        except SourceError as exc:
            return self._failed(index, f"could not read the source: {exc}"), "source"
        except ImageError as exc:
            return self._failed(index, str(exc)), "image"
        except ProviderError as exc:
            return self._failed(index, str(exc)), "provider"
        except StorageError as exc:
            return self._failed(index, f"could not store the result: {exc}"), "storage"
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug, not bad input: keep the job going and log the trace for us, not the seller.
            log.exception("unexpected error on image %d of job %s", index, job.job_id)
            return self._failed(index, "internal error while processing this image"), "internal"
        return ImageOutcome(
            index=index,
            status=ImageStatus.succeeded,
            result_url=stored.url,
            result_key=stored.key,
            metadata={
                **result.metadata,
                "format": result.format,
                "width": result.width,
                "height": result.height,
                "bytes": len(result.data),
                "content_type": result.content_type,
                # "hit": the same source and config were processed before, and that result was reused.
                "cache": "hit" if hit is not None else "miss",
                # Where the bytes came from: the final URL after redirects, a storage key, "data: URI".
                "source": source.origin,
                "total_ms": round((time.perf_counter() - started) * 1000, 1),
                "marketplace": marketplace,
            },
        ), "none"

    def _retry_window(self, limit: asyncio.Timeout) -> float:
        deadline = limit.when()
        if deadline is None:
            return self.storage_retry_seconds
        return min(self.storage_retry_seconds, deadline - asyncio.get_running_loop().time())

    @staticmethod
    def _failed(index: int, message: str) -> ImageOutcome:
        return ImageOutcome(index=index, status=ImageStatus.failed, error=message)
