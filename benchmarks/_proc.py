"""What Linux's /proc says about the processes a benchmark runs: memory, CPU time, run-queue waits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (`VmHWM`, `VmRSS`...); 0 if the process or field is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _stat_fields(path: str) -> list[str]:
    # The fields after the command name, which may itself hold spaces and parentheses.
    return Path(path).read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU time of a process so far (plus its reaped children's); 0 if it is gone."""
    try:
        fields = _stat_fields(f"/proc/{pid}/stat")
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime are fields 14 to 17 of /proc/PID/stat: index 11 to 14 after the name.
    ticks = sum(int(value) for value in fields[11 : 15 if reaped_children else 13])
    return ticks / TICKS


def descendants(pid: int) -> list[int]:
    """The live processes below `pid`: its children, theirs, and so on."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(f"{entry}/stat")[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants (threads that exited included)."""
    return sum(cpu_seconds(process) for process in [pid, *descendants(pid)])


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have been busy since boot (user, nice, system, irq, steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


@dataclass(frozen=True)
class ThreadTimes:
    """One thread's CPU time and time spent runnable but waiting for a core (kernel run-queue delay)."""

    group: str
    cpu_s: float
    runq_s: float


MAIN_THREAD = "event loop (main thread)"
PYTHON_THREADS = "Python threads (image pool etc.)"


def thread_times(pid: int) -> dict[tuple[int, int], ThreadTimes]:
    """Every thread of `pid` and its descendants (process pools), keyed by (process, thread id).

    Threads are grouped by name: the main thread of `pid` is `MAIN_THREAD`, its other threads that
    kept the process's name (Python's thread pools) are `PYTHON_THREADS`, others (libvips workers,
    say) keep their name, and threads of child processes are "pool process: NAME". The run-queue
    delay is from /proc/PID/task/TID/schedstat.
    """
    result: dict[tuple[int, int], ThreadTimes] = {}
    try:
        process_name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return result
    for process in [pid, *descendants(pid)]:
        try:
            tids = [int(name) for name in os.listdir(f"/proc/{process}/task")]
        except OSError:
            continue
        for tid in tids:
            base = f"/proc/{process}/task/{tid}"
            try:
                name = Path(f"{base}/comm").read_text().strip()
                fields = _stat_fields(f"{base}/stat")
                schedstat = Path(f"{base}/schedstat").read_text().split()
            except OSError:
                continue
            if process != pid:
                group = f"pool process: {name}"
            elif tid == pid:
                group = MAIN_THREAD
            elif name == process_name:
                group = PYTHON_THREADS
            else:
                group = name
            cpu = (int(fields[11]) + int(fields[12])) / TICKS
            result[(process, tid)] = ThreadTimes(group, cpu, int(schedstat[1]) / 1e9)
    return result


@dataclass
class GroupUsage:
    threads: int = 0
    cpu_s: float = 0.0
    runq_s: float = 0.0


def usage_by_group(
    before: dict[tuple[int, int], ThreadTimes], after: dict[tuple[int, int], ThreadTimes]
) -> dict[str, GroupUsage]:
    """CPU seconds and run-queue wait per thread group between two `thread_times` snapshots."""
    groups: dict[str, GroupUsage] = {}
    for key, sample in after.items():
        start = before.get(key, ThreadTimes(sample.group, 0.0, 0.0))
        usage = groups.setdefault(sample.group, GroupUsage())
        usage.threads += 1
        usage.cpu_s += sample.cpu_s - start.cpu_s
        usage.runq_s += sample.runq_s - start.runq_s
    return groups
