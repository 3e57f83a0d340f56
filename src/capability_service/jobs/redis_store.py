"""The Redis job store: job state shared by every API and worker process, events over pub/sub.

Layout (names in `jobs/keys.py`): one hash per job with its spec, status, counters and one field per
image outcome, so workers record images of one job concurrently without overwriting each other; the
full source URLs apart, so snapshots stay small; a sorted set of live job ids for the reconciler.

Every change runs as one Lua script: it checks the job's state, applies the change, bumps `version`
and publishes `<version>|<status>|<cancel>` on the job's channel, all atomically. Snapshots returned
by the changing methods (and those sent to subscribers) carry the sources as summaries; `get` and
`mark_processing` return the full sources while the job is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from capability_service.jobs import keys, lifecycle
from capability_service.jobs.models import ImageOutcome, ImageStatus, Job, JobStatus, summarize_source
from capability_service.jobs.store import CreateRefused, JobStoreUnavailable

log = logging.getLogger(__name__)

# Failing fast matters more than riding out a blip: a caller gets a 503 it can retry.
CONNECT_TIMEOUT_SECONDS = 2.0
COMMAND_TIMEOUT_SECONDS = 5.0
# How long `subscribe` waits for the event channel before telling the caller Redis is down.
SUBSCRIBE_READY_TIMEOUT_SECONDS = 5.0
# A live job's keys are refreshed on each change; this bounds how long a job nobody touches survives.
LIVE_JOB_GRACE_SECONDS = 24 * 3600
SUBSCRIBER_BACKLOG = 64
# Longest wait for listeners and connections to close at shutdown.
CLOSE_TIMEOUT_SECONDS = 5.0

FINAL_STATUS_VALUES = frozenset(status.value for status in JobStatus if status.is_final)

_LUA_PRELUDE = """
local function is_final(status)
  return status == 'completed' or status == 'failed' or status == 'cancelled'
end
local function announce(key, channel)
  local version = redis.call('HINCRBY', key, 'version', 1)
  local flags = redis.call('HMGET', key, 'status', 'cancel')
  redis.call('PUBLISH', channel, version .. '|' .. (flags[1] or '') .. '|' .. (flags[2] or '0'))
end
"""

# The live jobs of each tenant: a set per tenant (named prefix .. tenant) and each live job's tenant;
# and the source bytes each live job holds.
_LIVE_LUA = """
local function forget_tenant_live(tenant_of, prefix, key)
  local tenant = redis.call('HGET', tenant_of, key)
  if tenant then
    redis.call('SREM', prefix .. tenant, key)
    redis.call('HDEL', tenant_of, key)
  end
end
local function release_held(held_total, held_by_job, key)
  local size = redis.call('HGET', held_by_job, key)
  if size then
    redis.call('HDEL', held_by_job, key)
    redis.call('DECRBY', held_total, size)
  end
end
"""

# KEYS: job, sources, live, held total, held by job, tenant's live set, live job -> tenant.
# ARGV: ttl, sources json, created_at, job key, live?, channel, source bytes, byte limit (0: none),
# tenant live-job limit (0: none), tenant, field/value pairs. Returns {1} created, {0} exists,
# {-1, held} over the byte limit, {-2, live} over the tenant's live-job limit.
_CREATE = (
    _LUA_PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local size = tonumber(ARGV[7])
if ARGV[5] == '1' then
  local live_limit = tonumber(ARGV[9])
  local live = redis.call('SCARD', KEYS[6])
  if live_limit > 0 and live >= live_limit then return {-2, live} end
  local held = tonumber(redis.call('GET', KEYS[4]) or '0')
  local limit = tonumber(ARGV[8])
  if limit > 0 and held > 0 and held + size > limit then return {-1, held} end
end
for i = 11, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[1])
if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
  redis.call('HSET', KEYS[5], ARGV[4], size)
  redis.call('INCRBY', KEYS[4], size)
  redis.call('SADD', KEYS[6], ARGV[4])
  redis.call('HSET', KEYS[7], ARGV[4], ARGV[10])
end
announce(KEYS[1], ARGV[6])
return {1}
"""
)

# A job that is no longer live: out of the live list, its held bytes and its tenant's live set.
# KEYS: held total, held by job, live, live job -> tenant. ARGV: job key, tenant live-set prefix.
_RELEASE = (
    _LIVE_LUA
    + """
release_held(KEYS[1], KEYS[2], ARGV[1])
forget_tenant_live(KEYS[4], ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
"""
)

# KEYS: job, sources. ARGV: now, live ttl, channel, message (`lifecycle.processing_message`).
_MARK_PROCESSING = (
    _LUA_PRELUDE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or is_final(status) then return false end
if status == 'pending' then
  redis.call('HSET', KEYS[1], 'status', 'processing')
  redis.call('HSETNX', KEYS[1], 'started_at', ARGV[1])
  if redis.call('HGET', KEYS[1], 'cancel') ~= '1' then redis.call('HSET', KEYS[1], 'message', ARGV[4]) end
  announce(KEYS[1], ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return redis.call('HGETALL', KEYS[1])
"""
)

# KEYS: job, sources. ARGV: index, outcome json, final?, processed?, succeeded?, live ttl, channel,
# progress template (`lifecycle.PROGRESS_TEMPLATE`, formatted with the processed and total counts).
# Returns {1 if this outcome was the job's last unfinished image, the job's fields}.
_UPDATE_IMAGE = (
    _LUA_PRELUDE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or is_final(status) then return false end
local done_field = 'fin:' .. ARGV[1]
local last = 0
if ARGV[3] == '1' then
  -- The first final outcome of an image wins: a retried or duplicated run neither undoes nor recounts it.
  if redis.call('HSETNX', KEYS[1], done_field, 1) == 0 then return {0, redis.call('HGETALL', KEYS[1])} end
  local done = redis.call('HINCRBY', KEYS[1], 'done', 1)
  if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'processed', 1) end
  if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'succeeded', 1) end
  local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
  local processed = tonumber(redis.call('HGET', KEYS[1], 'processed'))
  redis.call('HSET', KEYS[1], 'message', string.format(ARGV[8], processed, total))
  if done == total then last = 1 end
elseif redis.call('HEXISTS', KEYS[1], done_field) == 1 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], 'img:' .. ARGV[1], ARGV[2])
announce(KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {last, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: job, sources, live, held total, held by job, live job -> tenant. ARGV: expected version, status,
# message, finished_at, ttl, channel, job key, tenant live-set prefix, field/value pairs (the outcomes of
# unfinished images). Returns {-1} when the job changed meanwhile.
_FINISH = (
    _LUA_PRELUDE
    + _LIVE_LUA
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if is_final(status) then return {0, redis.call('HGETALL', KEYS[1])} end
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return {-1} end
for i = 9, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[1], 'fin:' .. string.sub(ARGV[i], 5), 1)
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'message', ARGV[3], 'finished_at', ARGV[4])
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[4])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[7])
release_held(KEYS[4], KEYS[5], ARGV[7])
forget_tenant_live(KEYS[6], ARGV[8], ARGV[7])
announce(KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: job. ARGV: channel, message (`lifecycle.CANCELLING`).
_REQUEST_CANCEL = (
    _LUA_PRELUDE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if is_final(status) or redis.call('HGET', KEYS[1], 'cancel') == '1' then
  return {0, redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], 'cancel', '1', 'message', ARGV[2])
announce(KEYS[1], ARGV[1])
return {1, redis.call('HGETALL', KEYS[1])}
"""
)


def describe_redis_url(url: str) -> str:
    """host:port/db of a Redis URL, never its password: safe for messages and health reports."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    db = parts.path.lstrip("/") or "0"
    return f"{host}:{port}/{db}"


def make_redis(
    url: str, *, socket_timeout: float | None = COMMAND_TIMEOUT_SECONDS, client_class: type[Redis] = Redis
) -> Redis:
    """A client that fails within seconds when Redis is gone and reconnects by itself when it is back."""
    client: Redis = client_class.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=socket_timeout,
        socket_keepalive=True,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
    )
    return client


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _fields(flat: list[Any]) -> dict[str, str]:
    """HGETALL as Lua returns it (a flat list) -> dict."""
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _spec(job: Job) -> str:
    return json.dumps(
        {
            "job_id": job.job_id,
            "tenant": job.tenant,
            "user_id": job.user_id,
            "type": job.type,
            "plugin": job.plugin,
            "config": job.config,
            "fingerprint": job.fingerprint,
            "created_at": job.created_at,
            "sources": [summarize_source(url) for url in job.source_image_urls],
            "source_facts": job.source_facts,
        },
        separators=(",", ":"),
    )


def job_from_fields(fields: dict[str, str], sources: list[str] | None = None) -> Job:
    """Rebuild a job from its hash; without `sources` the snapshot carries the source summaries."""
    spec = json.loads(fields["spec"])
    total = int(fields["total"])
    images = [
        ImageOutcome.model_validate_json(fields[f"img:{index}"])
        if f"img:{index}" in fields
        else ImageOutcome(index=index)
        for index in range(total)
    ]
    started_at = fields.get("started_at")
    finished_at = fields.get("finished_at")
    return Job(
        job_id=spec["job_id"],
        tenant=spec["tenant"],
        user_id=spec["user_id"],
        type=spec["type"],
        plugin=spec["plugin"],
        config=spec["config"],
        source_image_urls=sources if sources is not None else spec["sources"],
        fingerprint=spec["fingerprint"],
        source_facts=spec.get("source_facts") or [],
        status=JobStatus(fields["status"]),
        message=fields["message"],
        images=images,
        created_at=spec["created_at"],
        started_at=float(started_at) if started_at is not None else None,
        finished_at=float(finished_at) if finished_at is not None else None,
        cancel_requested=fields.get("cancel") == "1",
        version=int(fields["version"]),
    )


@dataclass
class _JobChannel:
    """Local listeners of one job's events."""

    queues: set[asyncio.Queue[Job]] = field(default_factory=set)
    cancel_events: set[asyncio.Event] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pump: asyncio.Task[None] | None = None

    @property
    def empty(self) -> bool:
        return not self.queues and not self.cancel_events


class _EventRouter:
    """One pattern subscription per process, fanned out in-process to the listeners of each job.

    A message only says that a job changed; listeners that want snapshots get a fresh read, so a
    subscriber that falls behind skips intermediate progress but always sees the latest state. After a
    reconnect every listener gets a fresh read too, since messages sent during the gap are lost.
    """

    def __init__(self, redis: Redis, fetch: Callable[[str], Awaitable[Job | None]], where: str) -> None:
        self._redis = redis
        self._fetch = fetch
        self._where = where
        self._channels: dict[str, _JobChannel] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def attach(self, key: str, *, queue: asyncio.Queue[Job] | None = None, event: asyncio.Event | None = None) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="job-events")
        channel = self._channels.setdefault(key, _JobChannel())
        if queue is not None:
            channel.queues.add(queue)
        if event is not None:
            channel.cancel_events.add(event)
        if channel.pump is None:
            channel.pump = asyncio.create_task(self._pump(key, channel), name=f"job-events-{key}")

    def detach(self, key: str, *, queue: asyncio.Queue[Job] | None = None, event: asyncio.Event | None = None) -> None:
        channel = self._channels.get(key)
        if channel is None:
            return
        if queue is not None:
            channel.queues.discard(queue)
        if event is not None:
            channel.cancel_events.discard(event)
        if channel.empty:
            del self._channels[key]
            if channel.pump is not None:
                channel.pump.cancel()

    async def wait_ready(self) -> None:
        try:
            async with asyncio.timeout(SUBSCRIBE_READY_TIMEOUT_SECONDS):
                await self._ready.wait()
        except TimeoutError:
            detail = f": {self._last_error}" if self._last_error else ""
            raise JobStoreUnavailable(f"cannot subscribe to job events on Redis at {self._where}{detail}") from None

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub: PubSub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(keys.EVENTS_PATTERN)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    if message["type"] == "psubscribe":
                        # First subscription or a silent reconnect inside the client: events may be lost.
                        if not self._ready.is_set() or self._last_error is not None:
                            log.info("job events: subscribed on Redis at %s", self._where)
                        self._ready.set()
                        self._last_error = None
                        backoff = 0.1
                        self._resync()
                    elif message["type"] == "pmessage":
                        self._route(_text(message["channel"]), _text(message["data"]))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._last_error is None:
                    log.warning("job events: lost Redis at %s (%s); reconnecting", self._where, exc)
                self._last_error = str(exc) or type(exc).__name__
                self._ready.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                # Bounded: closing a subscription while its connection is stuck must not keep this task
                # (and everyone waiting for it at shutdown) alive.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _resync(self) -> None:
        for channel in self._channels.values():
            channel.wake.set()

    def _route(self, channel_name: str, data: str) -> None:
        channel = self._channels.get(keys.key_from_channel(channel_name))
        if channel is None:
            return
        _version, status, cancel = [*data.split("|"), "", ""][:3]
        if cancel == "1" or status in FINAL_STATUS_VALUES:
            for event in channel.cancel_events:
                event.set()
        if channel.queues:
            channel.wake.set()

    async def _pump(self, key: str, channel: _JobChannel) -> None:
        while True:
            await channel.wake.wait()
            channel.wake.clear()
            try:
                job = await self._fetch(key)
            except Exception as exc:
                # Whatever went wrong (Redis down, out of memory, a malformed record), the pump must live
                # on, or its subscribers would only get heartbeats until they give up.
                if not isinstance(exc, JobStoreUnavailable):
                    log.warning("reading job %s for its subscribers failed: %r", key, exc)
                await asyncio.sleep(0.5)
                channel.wake.set()
                continue
            if job is None:
                continue
            for queue in channel.queues:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(job)
            if job.cancel_requested or job.status.is_final:
                for event in channel.cancel_events:
                    event.set()

    async def close(self) -> None:
        tasks = [channel.pump for channel in self._channels.values() if channel.pump is not None]
        self._channels.clear()
        if self._task is not None:
            tasks.append(self._task)
            self._task = None
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a connection stuck closing must not hold up the shutdown of the whole process.
            _done, stuck = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_SECONDS)
            if stuck:
                log.warning("job events: %d listeners did not stop within %.0f s", len(stuck), CLOSE_TIMEOUT_SECONDS)


class RedisJobStore:
    """`JobStore` on Redis, shared by every API instance and worker. Redis down -> `JobStoreUnavailable`."""

    def __init__(self, url: str, *, ttl_seconds: int) -> None:
        self.where = describe_redis_url(url)
        self._redis = make_redis(url)
        self._ttl = ttl_seconds
        self._live_ttl = ttl_seconds + LIVE_JOB_GRACE_SECONDS
        self._create = self._redis.register_script(_CREATE)
        self._release = self._redis.register_script(_RELEASE)
        self._mark_processing = self._redis.register_script(_MARK_PROCESSING)
        self._update_image = self._redis.register_script(_UPDATE_IMAGE)
        self._finish = self._redis.register_script(_FINISH)
        self._request_cancel = self._redis.register_script(_REQUEST_CANCEL)
        self._events = _EventRouter(self._redis, self.snapshot, self.where)

    @property
    def redis(self) -> Redis:
        return self._redis

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise JobStoreUnavailable(f"Redis at {self.where} is unreachable ({detail})") from exc
        except RedisError as exc:
            # E.g. OOM or a script error: the store cannot serve, which is a 503, not a 500.
            detail = str(exc) or type(exc).__name__
            raise JobStoreUnavailable(f"Redis at {self.where} refused the request ({detail})") from exc

    async def create(self, job: Job, held_limit: int = 0, tenant_live_limit: int = 0) -> tuple[Job, bool]:
        values: dict[str, str] = {
            "spec": _spec(job),
            "total": str(job.total),
            "status": job.status.value,
            "message": job.message,
            "version": str(job.version),
            "cancel": "1" if job.cancel_requested else "0",
            "done": str(sum(1 for image in job.images if image.is_final)),
            "processed": str(job.processed),
            "succeeded": str(job.succeeded),
        }
        if job.started_at is not None:
            values["started_at"] = repr(job.started_at)
        if job.finished_at is not None:
            values["finished_at"] = repr(job.finished_at)
        for image in job.images:
            if image.status is not ImageStatus.pending:
                values[f"img:{image.index}"] = image.model_dump_json()
            if image.is_final:
                values[f"fin:{image.index}"] = "1"
        pairs = [item for pair in values.items() for item in pair]
        ttl = self._ttl if job.status.is_final else self._live_ttl
        with self._guard():
            result = await self._create(
                keys=[
                    keys.job_key(job.key),
                    keys.sources_key(job.key),
                    keys.LIVE_JOBS,
                    keys.HELD_BYTES,
                    keys.HELD_BY_JOB,
                    keys.tenant_live(job.tenant),
                    keys.LIVE_TENANT_OF,
                ],
                args=[
                    ttl,
                    json.dumps(job.source_image_urls),
                    job.created_at,
                    job.key,
                    "0" if job.status.is_final else "1",
                    keys.events_channel(job.key),
                    job.source_bytes,
                    held_limit,
                    tenant_live_limit,
                    job.tenant,
                    *pairs,
                ],
            )
        if int(result[0]) < 0:
            setting, limit = (
                ("MAX_PENDING_SOURCE_BYTES", held_limit)
                if int(result[0]) == -1
                else ("TENANT_MAX_LIVE_JOBS", tenant_live_limit)
            )
            raise CreateRefused(setting, count=int(result[1]), limit=limit, tenant=job.tenant)
        stored = await self.get(job.key)
        if stored is None:
            # Expired or deleted between the two calls: the caller may simply submit again.
            raise JobStoreUnavailable(f"job {job.job_id!r} vanished from Redis while being created")
        return stored, bool(int(result[0]))

    async def get(self, key: str) -> Job | None:
        with self._guard():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys.job_key(key))
                pipe.get(keys.sources_key(key))
                raw_fields, raw_sources = await pipe.execute()
        if not raw_fields:
            return None
        fields = {_text(k): _text(v) for k, v in raw_fields.items()}
        sources = json.loads(raw_sources) if raw_sources is not None else None
        return job_from_fields(fields, sources)

    async def snapshot(self, key: str) -> Job | None:
        """The job with source summaries instead of the sources: cheap enough for every event."""
        with self._guard():
            raw_fields = await self._redis.hgetall(keys.job_key(key))
        if not raw_fields:
            return None
        return job_from_fields({_text(k): _text(v) for k, v in raw_fields.items()})

    async def delete(self, key: str) -> None:
        with self._guard():
            await self._redis.delete(keys.job_key(key), keys.sources_key(key))
        await self.forget_live(key)

    async def _total(self, key: str) -> int:
        with self._guard():
            total = await self._redis.hget(keys.job_key(key), "total")
        return int(total) if total is not None else 0

    async def mark_processing(self, key: str) -> Job | None:
        with self._guard():
            result = await self._mark_processing(
                keys=[keys.job_key(key), keys.sources_key(key)],
                args=[
                    repr(time.time()),
                    self._live_ttl,
                    keys.events_channel(key),
                    lifecycle.processing_message(await self._total(key)),
                ],
            )
        if result is None:
            return None
        return await self.get(key)

    async def record_image(self, key: str, outcome: ImageOutcome) -> tuple[Job | None, bool]:
        """Record one image's outcome; True when it was the job's last unfinished image.

        Exactly one caller gets True for a job, so exactly one finalises it. A final outcome is
        kept: later outcomes of the same image (a retry, a duplicate run) are ignored.
        """
        final = outcome.is_final
        with self._guard():
            result = await self._update_image(
                keys=[keys.job_key(key), keys.sources_key(key)],
                args=[
                    outcome.index,
                    outcome.model_dump_json(),
                    "1" if final else "0",
                    "1" if outcome.status in (ImageStatus.succeeded, ImageStatus.failed) else "0",
                    "1" if outcome.status is ImageStatus.succeeded else "0",
                    self._live_ttl,
                    keys.events_channel(key),
                    lifecycle.PROGRESS_TEMPLATE,
                ],
            )
        if result is None:
            return None, False
        return job_from_fields(_fields(result[1])), bool(result[0])

    async def finish(self, key: str, status: JobStatus, reason: str | None = None) -> Job | None:
        # Optimistic: compute the closing message from a snapshot, apply it only if nothing changed since.
        # Each retry follows an image update, so this ends after at most a few rounds per image.
        while True:
            job = await self.snapshot(key)
            if job is None:
                return None
            if job.status.is_final:
                return job
            pending_fields: list[str] = []
            for image in job.images:
                if not image.is_final:
                    pending_fields += [f"img:{image.index}", lifecycle.stopped_image(image).model_dump_json()]
            with self._guard():
                result = await self._finish(
                    keys=[
                        keys.job_key(key),
                        keys.sources_key(key),
                        keys.LIVE_JOBS,
                        keys.HELD_BYTES,
                        keys.HELD_BY_JOB,
                        keys.LIVE_TENANT_OF,
                    ],
                    args=[
                        job.version,
                        status.value,
                        lifecycle.closing_message(job, status, reason),
                        repr(time.time()),
                        self._ttl,
                        keys.events_channel(key),
                        key,
                        keys.TENANT_LIVE_PREFIX,
                        *pending_fields,
                    ],
                )
            if result is None:
                return None
            if int(result[0]) == -1:
                continue
            return lifecycle.observe_closed(job_from_fields(_fields(result[1])), closed=int(result[0]) == 1)

    async def request_cancel(self, key: str) -> Job | None:
        with self._guard():
            result = await self._request_cancel(
                keys=[keys.job_key(key)], args=[keys.events_channel(key), lifecycle.CANCELLING]
            )
        if result is None:
            return None
        return job_from_fields(_fields(result[1]))

    async def cancel_requested(self, key: str) -> bool:
        """True when the job is gone, final or asked to cancel: its images should stop."""
        with self._guard():
            status, cancel = await self._redis.hmget(keys.job_key(key), ["status", "cancel"])
        return status is None or _text(status) in FINAL_STATUS_VALUES or (cancel is not None and _text(cancel) == "1")

    def subscribe(self, key: str) -> AbstractAsyncContextManager[AsyncIterator[Job]]:
        return self._subscribe(key)

    @asynccontextmanager
    async def _subscribe(self, key: str) -> AsyncIterator[AsyncIterator[Job]]:
        queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=SUBSCRIBER_BACKLOG)
        self._events.attach(key, queue=queue)

        async def snapshots() -> AsyncIterator[Job]:
            while True:
                yield await queue.get()

        try:
            await self._events.wait_ready()
            yield snapshots()
        finally:
            self._events.detach(key, queue=queue)

    @asynccontextmanager
    async def watch_cancel(self, key: str) -> AsyncIterator[asyncio.Event]:
        """An event set (within a pub/sub round trip) once the job is cancelled, finished or gone."""
        event = asyncio.Event()
        self._events.attach(key, event=event)
        try:
            await self._events.wait_ready()
            if await self.cancel_requested(key):
                event.set()
            yield event
        finally:
            self._events.detach(key, event=event)

    async def live_keys(self, limit: int = 1000) -> list[str]:
        """Ids of jobs not final yet, oldest first."""
        with self._guard():
            members = await self._redis.zrange(keys.LIVE_JOBS, 0, limit - 1)
        return [_text(member) for member in members if isinstance(member, (bytes, str))]

    async def forget_live(self, key: str) -> None:
        with self._guard():
            await self._release(
                keys=[keys.HELD_BYTES, keys.HELD_BY_JOB, keys.LIVE_JOBS, keys.LIVE_TENANT_OF],
                args=[key, keys.TENANT_LIVE_PREFIX],
            )

    async def held_source_bytes(self) -> int:
        with self._guard():
            held = await self._redis.get(keys.HELD_BYTES)
        return int(held or 0)

    async def try_lock(self, name: str, seconds: float) -> bool:
        """Take a lock that expires by itself; False when someone else holds it."""
        with self._guard():
            taken = await self._redis.set(name, "1", nx=True, px=max(1, int(seconds * 1000)))
        return bool(taken)

    async def health(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS + 1):
                await self._redis.ping()
                live = await self._redis.zcard(keys.LIVE_JOBS)
        except (RedisError, OSError, TimeoutError) as exc:
            return {
                "backend": "redis",
                "healthy": False,
                "redis": self.where,
                "detail": f"Redis is unreachable ({str(exc) or type(exc).__name__})",
            }
        return {"backend": "redis", "healthy": True, "redis": self.where, "live_jobs": int(live)}

    async def close(self) -> None:
        await self._events.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self._redis.aclose()
        except TimeoutError:
            log.warning(
                "closing the connections to Redis at %s took over %.0f s; left to the OS",
                self.where,
                CLOSE_TIMEOUT_SECONDS,
            )
