"""The time role: grids (cron and anchored intervals in a zone) and occurrences. Pure, no I/O.

``postburner_py.timegrid`` is the documented import path of :class:`TimeGrid`,
:func:`make_grid`, the validators and the DST policy. Modules: ``grid`` (the grids),
``cron`` (the syntax), ``days`` (the day fields), ``dst`` (the policy), ``zones`` (where zone
rules come from, offset changes), ``instants`` (whole seconds), ``occurrences`` (planning).
"""

from postburner_py.timegrid.dst import (
    DST_FOLD_CHOICES,
    DST_GAP_CHOICES,
    DstPolicy,
    validate_dst_fold,
    validate_dst_gap,
)
from postburner_py.timegrid.grid import (
    MACROS,
    CronGrid,
    IntervalGrid,
    TimeGrid,
    make_grid,
    validate_cron,
    validate_timezone,
)

__all__ = [
    "DST_FOLD_CHOICES",
    "DST_GAP_CHOICES",
    "MACROS",
    "CronGrid",
    "DstPolicy",
    "IntervalGrid",
    "TimeGrid",
    "make_grid",
    "validate_cron",
    "validate_dst_fold",
    "validate_dst_gap",
    "validate_timezone",
]
