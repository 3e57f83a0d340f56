"""Every Redis key, channel and queue name of the Redis job mode, in one place.

Jobs are named by `Job.key`, a hex digest of tenant and job id: no caller-chosen id reaches a key, so
none can collide with another job's keys (an id ending in ":sources", say) or another tenant's.

Our own keys all start with `PREFIX`. The task engine (SAQ) keeps its queue under `saq:<QUEUE_NAME>:*`
and its task records under `saq:job:<QUEUE_NAME>:*`; those layouts are SAQ's, only the name is ours.
"""

from __future__ import annotations

PREFIX = "capsvc"

# --- One job -------------------------------------------------------------------------------------

# Hash of one job: its spec, status, counters and one `img:<index>` field per image outcome.
JOB_PREFIX = f"{PREFIX}:job:"
# The job's full source URLs (data URIs can be megabytes), apart so snapshots need not carry them.
SOURCES_SUFFIX = ":sources"
# Pub/sub channel per job; each message is "<version>|<status>|<cancel flag>".
EVENTS_PREFIX = f"{PREFIX}:events:"
EVENTS_PATTERN = f"{EVENTS_PREFIX}*"


def job_key(key: str) -> str:
    return f"{JOB_PREFIX}{key}"


def sources_key(key: str) -> str:
    return f"{JOB_PREFIX}{key}{SOURCES_SUFFIX}"


def events_channel(key: str) -> str:
    return f"{EVENTS_PREFIX}{key}"


def key_from_channel(channel: str) -> str:
    return channel[len(EVENTS_PREFIX) :]


# --- Live jobs ------------------------------------------------------------------------------------

# Sorted set of the keys of jobs not yet final (score: creation time), walked by the reconciler.
LIVE_JOBS = f"{PREFIX}:live"
# Bytes of the sources that live jobs hold (data: URIs can be megabytes), in total and per job key:
# bounded by MAX_PENDING_SOURCE_BYTES across every instance, as in the memory mode.
HELD_BYTES = f"{PREFIX}:held-bytes"
HELD_BY_JOB = f"{PREFIX}:held-by-job"
# The live jobs of each tenant (a set per tenant, for TENANT_MAX_LIVE_JOBS) and each live job's tenant.
TENANT_LIVE_PREFIX = f"{PREFIX}:tenant-live:"
LIVE_TENANT_OF = f"{PREFIX}:live-tenant-of"


def tenant_live(tenant: str) -> str:
    return f"{TENANT_LIVE_PREFIX}{tenant}"


# --- Fair share (`jobs/redis_fair.py`) ------------------------------------------------------------

# The tenants with jobs waiting or images in flight; per job the next image to release; the count of
# images waiting over all tenants. Per tenant (`fair_keys`): the keys of its jobs with images still to
# release, and its released images not final yet. Tenant names are `[A-Za-z0-9_-]`
# (`core.security.TENANT_PATTERN`), so they cannot reach another key.
FAIR_TENANTS = f"{PREFIX}:fair:tenants"
FAIR_NEXT = f"{PREFIX}:fair:next"
FAIR_WAITING = f"{PREFIX}:fair:waiting"


def fair_keys(tenant: str) -> list[str]:
    """The keys every fair-share script takes, in order: the tenant's waiting jobs (a list), its images in
    flight (a sorted set), the next image of each job, the count of waiting images, the tenants at work."""
    return [f"{PREFIX}:fair:jobs:{tenant}", f"{PREFIX}:fair:flight:{tenant}", FAIR_NEXT, FAIR_WAITING, FAIR_TENANTS]


# --- The task queue -------------------------------------------------------------------------------

# SAQ queue that carries one task per image.
QUEUE_NAME = f"{PREFIX}-images"
# Separates job key and image index in a task key; job keys are hex, so they never contain it.
TASK_KEY_SEPARATOR = "#"
# Held by the one worker that reconciles live jobs at a time.
RECONCILE_LOCK = f"{PREFIX}:lock:reconcile"


def task_key(key: str, index: int) -> str:
    """The task-engine key of one image: enqueueing it twice while it is pending or running is a no-op."""
    return f"{key}{TASK_KEY_SEPARATOR}{index}"
