"""The DST policy of one schedule: what a fixed-hour schedule does in a gap and in a fold.

*Hourly-or-faster* schedules (a cron whose hour field matches all 24 hours, and intervals of
seconds, minutes or hours) follow elapsed time, whatever the policy says: they fire at every
instant the local clock shows a matching time, so a wall time a fold repeats fires twice and
one a gap skips never fires. Every other schedule has *fixed hours* (a cron naming some
hours, and calendar intervals of days, weeks, months or years); for those the policy decides:

* ``dst_gap``: a local time that does not exist fires at the first instant after the gap
  (``"shift"``, the default; several such times in one gap fire once) or not at all that
  day (``"skip"``);
* ``dst_fold``: a local time that happens twice fires at its first occurrence (``"first"``,
  the default), at its second (``"last"``), or at both (``"both"``: two distinct instants).
"""

from __future__ import annotations

from dataclasses import dataclass

from postburner_py.errors import ScheduleValidationError
from postburner_py.timegrid.zones import WallInstants

DST_GAP_CHOICES: tuple[str, ...] = ("shift", "skip")
DST_FOLD_CHOICES: tuple[str, ...] = ("first", "last", "both")
DEFAULT_DST_GAP = "shift"
DEFAULT_DST_FOLD = "first"


def validate_dst_gap(value: object) -> str:
    """``value`` if it is a ``dst_gap`` choice; else :class:`ScheduleValidationError`."""
    return _choice("dst_gap", value, DST_GAP_CHOICES, "what a time a spring gap skips does")


def validate_dst_fold(value: object) -> str:
    """``value`` if it is a ``dst_fold`` choice; else :class:`ScheduleValidationError`."""
    return _choice("dst_fold", value, DST_FOLD_CHOICES, "which occurrence of a repeated time runs")


def _choice(name: str, value: object, choices: tuple[str, ...], meaning: str) -> str:
    if isinstance(value, str) and value in choices:
        return value
    raise ScheduleValidationError(
        name, f"{value!r} is not a choice for {meaning}; use one of: {', '.join(choices)}"
    )


@dataclass(frozen=True)
class DstPolicy:
    """A schedule's ``dst_gap`` and ``dst_fold``, validated."""

    gap: str = DEFAULT_DST_GAP
    fold: str = DEFAULT_DST_FOLD

    def __post_init__(self) -> None:
        validate_dst_gap(self.gap)
        validate_dst_fold(self.fold)

    @property
    def shifts_gaps(self) -> bool:
        return self.gap == "shift"

    @property
    def fires_first_occurrence(self) -> bool:
        return self.fold != "last"

    @property
    def fires_second_occurrence(self) -> bool:
        return self.fold != "first"

    def instants(self, found: WallInstants) -> tuple[int, ...]:
        """The instants a fixed-hour wall time fires at, of those that show it."""
        if not found.shown:
            return (found.after_gap,) if self.shifts_gaps and found.after_gap is not None else ()
        if len(found.shown) == 1 or self.fold == "both":
            return found.shown
        return found.shown[:1] if self.fold == "first" else found.shown[1:]

    def describe(self, *, hourly_or_faster: bool) -> str:
        """One sentence on what this policy does for a schedule of that kind."""
        if hourly_or_faster:
            return (
                "DST: hourly or faster, follows elapsed time (a repeated time runs twice, "
                "a skipped one never; dst_gap and dst_fold do not apply)"
            )
        gap = "runs at the end of the gap" if self.shifts_gaps else "does not run that day"
        fold = {
            "first": "at its first occurrence",
            "last": "at its second occurrence",
            "both": "at both occurrences",
        }[self.fold]
        return (
            f"DST: a skipped time {gap} (dst_gap={self.gap}), "
            f"a repeated time runs {fold} (dst_fold={self.fold})"
        )


DEFAULT_POLICY = DstPolicy()
