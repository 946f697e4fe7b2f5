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
