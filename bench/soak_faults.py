"""The faults the soak injects (``bench/soak.py``), one at a time, each timed and logged."""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.soak_checks import FaultWindow, Kill
from bench.soak_cluster import Member, Members, Servers
from bench.soak_schedules import SoakSchedules

FAULT_KINDS = (
    "kill_worker",
    "kill_watchdog",
    "beanstalkd_restart",
    "beanstalkd_wipe",
    "postgres_stop",
    "edit",
    "skip",
    "disable",
)


@dataclass
class FaultRecord:
    """One fault: when it began and ended (wall and monotonic seconds), what it did."""

    kind: str
    offset: float
    wall0: float
    wall1: float
    mono0: float
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def window(self) -> FaultWindow:
        return FaultWindow(self.kind, self.wall0, self.wall1)

    def describe(self) -> str:
        took = self.wall1 - self.wall0
        outcome = f"ERROR {self.error}" if self.error else _brief(self.detail)
        return f"+{self.offset:7.1f}s {self.kind:<18} {took:5.1f}s  {outcome}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _brief(detail: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in detail.items())


def fault_plan(
    rng: random.Random,
    *,
    seconds: float,
    gap: tuple[float, float],
    kinds: tuple[str, ...] = FAULT_KINDS,
) -> Iterator[tuple[float, str]]:
    """``(offset, kind)``: one fault every ``gap`` seconds (uniform), until ``seconds``; the
    kinds come in shuffled rounds, so each kind comes once before any comes twice."""
    offset, bag = 0.0, list[str]()
    while True:
        offset += rng.uniform(*gap)
        if offset >= seconds:
            return
        if not bag:
            bag = list(kinds)
            rng.shuffle(bag)
        yield offset, bag.pop()


class FaultInjector:
    """Applies faults to the servers, the processes and the schedules; keeps the log and
    the SIGKILLs (the verdict needs to know which processes died when)."""

    def __init__(
        self,
        servers: Servers,
        members: Members,
        schedules: SoakSchedules,
        rng: random.Random,
        *,
        postgres_stop_seconds: float,
        disable_seconds: tuple[float, float],
    ) -> None:
        self.servers = servers
        self.members = members
        self.schedules = schedules
        self.rng = rng
        self.postgres_stop_seconds = postgres_stop_seconds
        self.disable_seconds = disable_seconds
        self.kills: list[Kill] = []
        self.log: list[FaultRecord] = []

    def inject(self, kind: str, offset: float) -> FaultRecord:
        """Apply one fault now; an exception is recorded in the log, never raised."""
        action: Callable[[], dict[str, Any]] = getattr(self, f"_{kind}")
        record = FaultRecord(kind, offset, time.time(), 0.0, time.monotonic())
        try:
            record.detail = action()
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        record.wall1 = time.time()
        self.log.append(record)
        return record

    def _kill_worker(self) -> dict[str, Any]:
        return self._kill(self.rng.choice(self.members.workers))

    def _kill_watchdog(self) -> dict[str, Any]:
        return self._kill(self.rng.choice(self.members.watchdogs))

    def _kill(self, member: Member) -> dict[str, Any]:
        kill = member.kill()
        self.kills.append(kill)
        member.start()
        return {"member": f"{member.role}-{member.index}", "pid": kill.pid, "new": member.pid}

    def _beanstalkd_restart(self) -> dict[str, Any]:
        self.servers.restart_beanstalkd(wipe_binlog=False)
        return {"binlog": "kept"}

    def _beanstalkd_wipe(self) -> dict[str, Any]:
        self.servers.restart_beanstalkd(wipe_binlog=True)
        return {"binlog": "wiped"}

    def _postgres_stop(self) -> dict[str, Any]:
        self.servers.pg.stop()
        time.sleep(self.postgres_stop_seconds)
        self.servers.pg.start()
        return {"down_s": self.postgres_stop_seconds}

    def _edit(self) -> dict[str, Any]:
        return self.schedules.edit()

    def _skip(self) -> dict[str, Any]:
        return self.schedules.skip()

    def _disable(self) -> dict[str, Any]:
        return self.schedules.disable_for(self.rng.uniform(*self.disable_seconds))
