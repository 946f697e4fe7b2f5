"""Timezones: where zone rules come from, their offset changes, and wall times as instants.

Every zone the time grid uses is looked up through one :class:`ZoneSource`, the installed
IANA tzdata by default (:class:`InstalledZones`). The source is swappable
(:func:`using_zones`) so a test can plan with one rule set and check with another, which is
how the watchdog's tzdata-drift check is proven; the source also names its rules' version
(:meth:`ZoneSource.version`) and :func:`zone_fingerprint` condenses what a zone does over a
span of years, so a change of the rules can be seen without keeping the old rules.

The offset changes of a zone are found by sampling it daily and bisecting, cached per zone
and year: exact because no tzdata zone since 1900 changes offset twice within a day (the
closest pair is four days apart).
"""

from __future__ import annotations

import calendar
import difflib
import hashlib
import importlib
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from postburner_py.errors import ScheduleValidationError
from postburner_py.timegrid.instants import DAY, SECOND, naive, wall_seconds

_ZONE_EXAMPLE = "use an IANA name such as 'Europe/Prague', 'America/New_York' or 'UTC'"


# --------------------------------------------------------------------------- where rules come from


class ZoneSource(Protocol):
    """Where zone rules come from: a zone by IANA name, and the version of the rule set."""

    def zone(self, name: str) -> ZoneInfo:
        """The zone ``name``; raises ``ZoneInfoNotFoundError`` (or ``ValueError``) if unknown."""
        ...

    def version(self) -> str:
        """A text that changes whenever the rules may have changed (e.g. ``system 2025b``)."""
        ...


class InstalledZones:
    """The tzdata :mod:`zoneinfo` reads: the system's files, else the ``tzdata`` package."""

    def zone(self, name: str) -> ZoneInfo:
        """``ZoneInfo(name)``."""
        return ZoneInfo(name)

    def version(self) -> str:
        """``system <version>`` or ``tzdata <version>``, as zoneinfo would resolve zones."""
        return installed_tzdata_version()


_SOURCE: list[ZoneSource] = [InstalledZones()]


def zone_source() -> ZoneSource:
    """The source every grid made from now on takes its zones from."""
    return _SOURCE[0]


@contextmanager
def using_zones(source: ZoneSource) -> Iterator[ZoneSource]:
    """Plan with ``source``'s rules inside the block (process-wide; for tests and tools)."""
    previous = _SOURCE[0]
    _SOURCE[0] = source
    try:
        yield source
    finally:
        _SOURCE[0] = previous


def installed_tzdata_version() -> str:
    """The version of the tzdata zoneinfo uses: the first TZPATH directory that has the
    files (their ``tzdata.zi`` or ``+VERSION``), else the ``tzdata`` package, else ``unknown``."""
    for directory in map(Path, zoneinfo.TZPATH):
        if (directory / "UTC").is_file():
            return f"system {_system_version(directory)}"
    try:
        tzdata = importlib.import_module("tzdata")
    except ImportError:
        return "unknown"
    return f"tzdata {getattr(tzdata, 'IANA_VERSION', 'unknown')}"


def _system_version(directory: Path) -> str:
    try:
        with (directory / "tzdata.zi").open(encoding="utf-8") as text:
            first = text.readline()
        if first.startswith("# version "):
            return first.removeprefix("# version ").strip()
        return (directory / "+VERSION").read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- loading and checking


def validate_timezone(name: str) -> ZoneInfo:
    """Load the IANA timezone ``name`` from the current :func:`zone_source`.

    Raises :class:`ScheduleValidationError` (field ``timezone``) for anything that is not
    a known IANA name, suggesting the closest known name when there is one.
    """
    if not isinstance(name, str) or not name.strip():
        raise ScheduleValidationError(
            "timezone", f"expected a timezone name, got {name!r}; {_ZONE_EXAMPLE}"
        )
    try:
        return zone_source().zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, KeyError):
        raise ScheduleValidationError(
            "timezone", f"unknown timezone {name!r}{_zone_hint(name)}; {_ZONE_EXAMPLE}"
        ) from None


def _zone_hint(name: str) -> str:
    by_folded = {key.casefold(): key for key in _known_zones()}
    close = difflib.get_close_matches(name.strip().casefold(), list(by_folded), n=1)
    return f" (did you mean {by_folded[close[0]]!r}?)" if close else ""


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


# --------------------------------------------------------------------------- offsets and changes


def offset_at(zone: ZoneInfo, instant: int) -> int:
    """UTC offset in seconds in force at ``instant`` (UTC seconds)."""
    offset = datetime.fromtimestamp(instant, zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset
    return offset // SECOND


def local_wall(zone: ZoneInfo, instant: int) -> datetime:
    """The naive local wall time at ``instant``."""
    return naive(instant + offset_at(zone, instant))


class Transition(NamedTuple):
    """A change of UTC offset: ``before`` is in force until ``at``, ``after`` from ``at`` on.

    A forward change (``after > before``) skips the local times in
    ``[at + before, at + after)`` (a gap); a backward one shows the local times in
    ``[at + after, at + before)`` twice (a fold).
    """

    at: int
    before: int
    after: int

    @property
    def is_gap(self) -> bool:
        return self.after > self.before


@lru_cache(maxsize=4096)
def transitions_in_year(zone: ZoneInfo, year: int) -> tuple[Transition, ...]:
    """Offset changes in (Jan 1 of ``year``, Jan 1 of the next year], UTC."""
    if not 2 <= year <= 9998:
        return ()
    start = wall_seconds(datetime(year, 1, 1))
    end = start + (366 if calendar.isleap(year) else 365) * DAY
    found: list[Transition] = []
    low, low_offset = start, offset_at(zone, start)
    for sample in range(start + DAY, end + 1, DAY):
        offset = offset_at(zone, sample)
        if offset != low_offset:
            at = first_change(zone, low, sample, low_offset)
            found.append(Transition(at, low_offset, offset_at(zone, at)))
        low, low_offset = sample, offset
    return tuple(found)


def first_change(zone: ZoneInfo, low: int, high: int, low_offset: int) -> int:
    """Smallest instant in (low, high] whose offset differs from ``low_offset`` (one change)."""
    while high - low > 1:
        middle = (low + high) // 2
        if offset_at(zone, middle) == low_offset:
            low = middle
        else:
            high = middle
    return high


def _utc_year(instant: int) -> int:
    return naive(instant).year


def next_transition(zone: ZoneInfo, after: int, limit: int) -> Transition | None:
    """First offset change at an instant in (after, limit]."""
    for year in range(_utc_year(after), _utc_year(limit) + 1):
        for change in transitions_in_year(zone, year):
            if change.at > after:
                return change if change.at <= limit else None
    return None


def previous_transition(zone: ZoneInfo, at_or_before: int, since: int) -> Transition | None:
    """Last offset change at an instant in (since, at_or_before]."""
    for year in range(_utc_year(at_or_before), _utc_year(since) - 2, -1):
        for change in reversed(transitions_in_year(zone, year)):
            if change.at <= at_or_before:
                return change if change.at > since else None
    return None


class WallInstants(NamedTuple):
    """The instants that show one local wall time, and whether it fell in a gap.

    ``shown`` holds one instant normally, two (ascending) in a fold and none in a gap, where
    ``after_gap`` is the first instant after the gap (else None).
    """

    shown: tuple[int, ...]
    after_gap: int | None


def wall_instants(zone: ZoneInfo, wall: datetime) -> WallInstants:
    """Every instant at which the local clock of ``zone`` shows ``wall`` (naive)."""
    local = wall.replace(tzinfo=zone, fold=0)
    first = local.utcoffset()
    second = local.replace(fold=1).utcoffset()
    assert first is not None and second is not None  # a ZoneInfo always knows its offset
    base = wall_seconds(wall)
    early, late = base - first // SECOND, base - second // SECOND
    if first == second:
        return WallInstants((early,), None)
    if first > second:
        return WallInstants((early, late), None)
    return WallInstants((), first_change(zone, late, early, first // SECOND))


def zone_fingerprint(zone: ZoneInfo, first_year: int, last_year: int) -> str:
    """A short digest of every offset change of ``zone`` in ``first_year..last_year`` (and the
    offset before them): equal fingerprints mean the zone fires every grid the same there."""
    start = wall_seconds(datetime(first_year, 1, 1))
    changes = [
        tuple(change)
        for year in range(first_year, last_year + 1)
        for change in transitions_in_year(zone, year)
    ]
    text = repr((offset_at(zone, start), changes))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
