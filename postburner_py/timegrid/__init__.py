"""The time role: grids (cron and anchored intervals in a zone) and occurrences. Pure, no I/O.

``postburner_py.timegrid`` is the documented import path of :class:`TimeGrid`,
:func:`make_grid` and the validators.
"""

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
    "MACROS",
    "CronGrid",
    "IntervalGrid",
    "TimeGrid",
    "make_grid",
    "validate_cron",
    "validate_timezone",
]
