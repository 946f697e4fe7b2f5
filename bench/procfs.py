"""Resident memory from ``/proc`` (Linux). Standard library only: a child that measures a bare
process imports nothing else through it."""

from __future__ import annotations

from pathlib import Path


def proc_status_kb(field_name: str, pid: int | str = "self") -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise KeyError(f"{field_name} not in /proc/{pid}/status")


def memory_mb() -> dict[str, float]:
    """This process's resident set now and at its peak, in MiB."""
    return {
        "rss_mb": proc_status_kb("VmRSS") / 1024,
        "peak_rss_mb": proc_status_kb("VmHWM") / 1024,
    }


def cpu_jiffies() -> tuple[int, int]:
    """The machine's CPU time so far from ``/proc/stat``: (all, stolen), in clock ticks.

    Stolen time is time the hypervisor gave this virtual machine's CPUs to another guest; on a
    shared host it is what makes the same code run at half speed from one run to the next.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(value) for value in fields[:8]]
    return sum(ticks), ticks[7]


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of CPU time stolen between two :func:`cpu_jiffies` readings, in percent."""
    total = after[0] - before[0]
    return 100.0 * (after[1] - before[1]) / total if total > 0 else 0.0
