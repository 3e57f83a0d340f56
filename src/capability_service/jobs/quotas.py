"""Per-tenant and per-user rate limits on submitting jobs, counted by the `limits` package.

In the memory mode the counters live in the process; in the Redis mode in Redis (`limits`' own Redis
storage, keys under `capsvc:limits`), so every API instance counts against the same budget. A limit
that is passed is a `QuotaExceeded` (429 with `Retry-After` and the draft IETF `RateLimit` headers).

The other quotas sit where they are enforced atomically: the live jobs of a tenant in the job store
(`TENANT_MAX_LIVE_JOBS`), the images of a tenant in flight in the fair-share windows
(`TENANT_MAX_IMAGES_IN_FLIGHT`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import Redis

from capability_service.core.config import Settings

# The draft IETF headers a submit answer carries when a rate limit applies.
QUOTA_HEADERS = ("RateLimit-Policy", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
# Where `limits` keeps the counters in Redis; ours all start with `jobs.keys.PREFIX`.
LIMITS_PREFIX = "capsvc:limits"


class QuotaExceeded(Exception):
    """A tenant or user went over one of its limits; the message names which (429)."""

    def __init__(self, message: str, *, retry_after: int, state: QuotaState | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.state = state


@dataclass(frozen=True, slots=True)
class QuotaState:
    """Where a caller stands against its tightest limit: the `RateLimit-*` headers of an answer."""

    policy: str
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": self.policy,
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    item: RateLimitItem
    # "submits" cost one per job, "images" one per image of the job.
    per: str
    # "tenant" or "user" (a user's own budget inside its tenant).
    scope: str

    @property
    def policy(self) -> str:
        # The draft's policy syntax: `<limit>;w=<window seconds>`.
        return f"{self.item.amount};w={self.item.get_expiry()}"


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    submits: str | None = None
    images: str | None = None
    user_submits: str | None = None
    user_images: str | None = None


class SubmitQuotas:
    """The submit-time limits of one deployment; `check` spends from every budget that applies, or none."""

    def __init__(self, settings: QuotaSettings, storage: Storage | None = None) -> None:
        rules = [
            ("RATE_LIMIT_SUBMITS", settings.submits, "submits", "tenant"),
            ("RATE_LIMIT_IMAGES", settings.images, "images", "tenant"),
            ("RATE_LIMIT_USER_SUBMITS", settings.user_submits, "submits", "user"),
            ("RATE_LIMIT_USER_IMAGES", settings.user_images, "images", "user"),
        ]
        self.rules = [_Rule(name, parse(text), per, scope) for name, text, per, scope in rules if text]
        self.storage = storage or MemoryStorage()
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)

    @classmethod
    def unlimited(cls) -> SubmitQuotas:
        return cls(QuotaSettings())

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis | None = None) -> SubmitQuotas:
        """The deployment's limits; counted in `redis` (shared by every instance) when given."""
        limits = QuotaSettings(
            submits=settings.rate_limit_submits,
            images=settings.rate_limit_images,
            user_submits=settings.rate_limit_user_submits,
            user_images=settings.rate_limit_user_images,
        )
        return cls.for_redis(limits, redis) if redis is not None else cls(limits)

    @classmethod
    def for_redis(cls, settings: QuotaSettings, redis: Redis) -> SubmitQuotas:
        """Counters in Redis, shared by every API instance, over the job store's own connections."""
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=LIMITS_PREFIX,
            # `limits` types its options as scalars; it hands this one to redis-py, which takes a pool.
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        return cls(settings, storage)

    def _applies(self, rule: _Rule, user_id: str | None) -> bool:
        return rule.scope == "tenant" or user_id is not None

    @staticmethod
    def _identifiers(rule: _Rule, tenant: str, user_id: str | None) -> tuple[str, ...]:
        return (rule.per, tenant) if rule.scope == "tenant" else (rule.per, tenant, user_id or "")

    async def check(self, tenant: str, user_id: str | None, images: int) -> QuotaState | None:
        """Spend a submission of `images` images; raises `QuotaExceeded` and spends nothing when over a limit.

        Returns where the caller stands against its tightest limit afterwards (None without limits).
        """
        applicable = [rule for rule in self.rules if self._applies(rule, user_id)]
        for rule in applicable:
            cost = images if rule.per == "images" else 1
            identifiers = self._identifiers(rule, tenant, user_id)
            if not await self.limiter.test(rule.item, *identifiers, cost=cost):
                raise await self._exceeded(rule, identifiers, cost, tenant)
        states: list[QuotaState] = []
        for rule in applicable:
            cost = images if rule.per == "images" else 1
            identifiers = self._identifiers(rule, tenant, user_id)
            if not await self.limiter.hit(rule.item, *identifiers, cost=cost):
                # Another instance spent the rest between the test and the hit.
                raise await self._exceeded(rule, identifiers, cost, tenant)
            states.append(await self._state(rule, identifiers))
        return min(states, key=lambda state: state.remaining / max(1, state.limit)) if states else None

    async def _state(self, rule: _Rule, identifiers: tuple[str, ...]) -> QuotaState:
        stats = await self.limiter.get_window_stats(rule.item, *identifiers)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return QuotaState(rule.policy, rule.item.amount, max(0, stats.remaining), reset)

    async def _exceeded(self, rule: _Rule, identifiers: tuple[str, ...], cost: int, tenant: str) -> QuotaExceeded:
        state = await self._state(rule, identifiers)
        who = f"tenant {tenant!r}" if rule.scope == "tenant" else "this user"
        what = "job submissions" if rule.per == "submits" else "images"
        detail = f"{who} is over its limit of {rule.item.amount} {what} per {rule.item.GRANULARITY.name}"
        if rule.per == "images" and cost > rule.item.amount:
            detail += f"; a job of {cost} images can never fit, split it"
        return QuotaExceeded(
            f"{detail} ({rule.name}); try again in {max(1, state.reset_seconds)} s",
            retry_after=max(1, state.reset_seconds),
            state=state,
        )
