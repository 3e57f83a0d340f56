"""`FairQueue` on Redis: the tenants' windows shared by every API instance and worker.

Per tenant a list of job keys with images still to release (oldest first) and a sorted set of its
released images not final yet (score: when released); per job the next index to release. Each change
is one Lua script, so two workers finishing images of one tenant at once never release the same
image twice or overfill the window. The scripts read a job's status and total from its hash (named
from `keys.JOB_PREFIX`), so they need a single Redis, not a cluster, like the rest of the job store.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from redis.asyncio import Redis

from capability_service.jobs import keys
from capability_service.jobs.fair import Released
from capability_service.jobs.models import Job

_IS_GONE = """
local function is_gone(job_hash)
  local fields = redis.call('HMGET', job_hash, 'status', 'cancel')
  local status = fields[1]
  return (not status) or status == 'completed' or status == 'failed' or status == 'cancelled' or fields[2] == '1'
end
"""

# Every script takes `keys.fair_keys(tenant)`: KEYS[1] the tenant's waiting jobs, [2] its images in
# flight, [3] the next index of each job, [4] the count of waiting images, [5] the tenants at work.

# ARGV: job key, total, tenant.
_ADD = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], 0)
redis.call('INCRBY', KEYS[4], ARGV[2])
redis.call('SADD', KEYS[5], ARGV[3])
"""

# Drop a tenant with nothing waiting and nothing in flight from the tenants set (its share goes to the others).
_PRUNE = """
local function prune(jobs, flight, tenants, tenant)
  if redis.call('EXISTS', jobs, flight) == 0 then redis.call('SREM', tenants, tenant) end
end
"""

# ARGV: capacity (image slots of all workers), per-tenant cap (0: none), now, job hash prefix, tenant.
# The window is `fair.share_window`: ceil(capacity / tenants with work), at least 1, at most the cap.
# Returns the released "<key>#<index>" members, in order.
_RELEASE = (
    _IS_GONE
    + _PRUNE
    + """
local window = math.max(1, math.ceil(tonumber(ARGV[1]) / math.max(1, redis.call('SCARD', KEYS[5]))))
local cap = tonumber(ARGV[2])
if cap > 0 and cap < window then window = cap end
local released = {}
while redis.call('ZCARD', KEYS[2]) < window do
  local key = redis.call('LINDEX', KEYS[1], 0)
  if not key then break end
  local job_hash = ARGV[4] .. key
  local total = tonumber(redis.call('HGET', job_hash, 'total') or '0')
  local index = tonumber(redis.call('HGET', KEYS[3], key) or total)
  if index >= total or is_gone(job_hash) then
    redis.call('LPOP', KEYS[1])
    redis.call('HDEL', KEYS[3], key)
    if total > index then redis.call('DECRBY', KEYS[4], total - index) end
  else
    if index + 1 >= total then
      -- Every image of the job is out: it no longer waits.
      redis.call('LPOP', KEYS[1])
      redis.call('HDEL', KEYS[3], key)
    else
      redis.call('HSET', KEYS[3], key, index + 1)
    end
    redis.call('DECR', KEYS[4])
    local member = key .. '#' .. index
    redis.call('ZADD', KEYS[2], ARGV[3], member)
    table.insert(released, member)
  end
end
prune(KEYS[1], KEYS[2], KEYS[5], ARGV[5])
return released
"""
)

# ARGV: member, tenant.
_DONE = (
    _PRUNE
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
prune(KEYS[1], KEYS[2], KEYS[5], ARGV[2])
"""
)

# ARGV: job key, its total, tenant. Returns the job's released members that were still in flight.
_FORGET = (
    _PRUNE
    + """
redis.call('LREM', KEYS[1], 0, ARGV[1])
local index = redis.call('HGET', KEYS[3], ARGV[1])
if index then
  redis.call('HDEL', KEYS[3], ARGV[1])
  local left = tonumber(ARGV[2]) - tonumber(index)
  if left > 0 then redis.call('DECRBY', KEYS[4], left) end
end
local gone = {}
local prefix = ARGV[1] .. '#'
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if string.sub(member, 1, #prefix) == prefix then
    redis.call('ZREM', KEYS[2], member)
    table.insert(gone, member)
  end
end
prune(KEYS[1], KEYS[2], KEYS[5], ARGV[3])
return gone
"""
)


class Capacity(Protocol):
    """Image slots of all the workers now (the sum of their concurrency)."""

    async def __call__(self) -> int: ...


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _released(tenant: str, member: bytes | str) -> Released:
    key, _, index = _text(member).rpartition(keys.TASK_KEY_SEPARATOR)
    return Released(tenant, key, int(index))


class RedisFairQueue:
    """`FairQueue` of the Redis engine; Redis errors propagate (the callers map them to 503 or retry)."""

    def __init__(self, redis: Redis, capacity: Capacity, tenant_cap: int = 0) -> None:
        self.redis = redis
        self.capacity = capacity
        self.tenant_cap = tenant_cap
        self._add = redis.register_script(_ADD)
        self._release = redis.register_script(_RELEASE)
        self._done = redis.register_script(_DONE)
        self._forget = redis.register_script(_FORGET)

    async def add(self, job: Job) -> None:
        await self._add(
            keys=keys.fair_keys(job.tenant),
            args=[job.key, job.total, job.tenant],
        )

    async def release(self, tenant: str) -> list[Released]:
        members: list[Any] = await self._release(
            keys=keys.fair_keys(tenant),
            args=[await self.capacity(), self.tenant_cap, time.time(), keys.JOB_PREFIX, tenant],
        )
        return [_released(tenant, member) for member in members]

    async def done(self, item: Released) -> None:
        await self._done(
            keys=keys.fair_keys(item.tenant),
            args=[keys.task_key(item.key, item.index), item.tenant],
        )

    async def forget(self, job: Job) -> list[Released]:
        members: list[Any] = await self._forget(
            keys=keys.fair_keys(job.tenant),
            args=[job.key, job.total, job.tenant],
        )
        return [_released(job.tenant, member) for member in members]

    async def waiting_jobs(self) -> int:
        return int(await self.redis.hlen(keys.FAIR_NEXT))

    async def waiting_images(self) -> int:
        return max(0, int(await self.redis.get(keys.FAIR_WAITING) or 0))

    async def tenants(self) -> list[str]:
        return sorted(_text(tenant) for tenant in await self.redis.smembers(keys.FAIR_TENANTS))

    async def in_flight(self, tenant: str) -> list[tuple[Released, float]]:
        """The tenant's released images not final yet, with the time each was released."""
        pairs: list[Any] = await self.redis.zrange(keys.fair_keys(tenant)[1], 0, -1, withscores=True)
        return [(_released(tenant, member), float(score)) for member, score in pairs]

    async def is_listed(self, key: str) -> bool:
        """True while the job has images waiting for release."""
        return bool(await self.redis.hexists(keys.FAIR_NEXT, key))
