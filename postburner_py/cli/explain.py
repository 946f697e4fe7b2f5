"""Cron expressions in words, for ``postburner explain``, with the DST policy they follow."""

from __future__ import annotations

import re

from postburner_py.timegrid import grid as timegrid
from postburner_py.timegrid.dst import DEFAULT_DST_FOLD, DEFAULT_DST_GAP

#: ``d#L`` is croner's spelling of ``dL``, which cron-descriptor reads.
_LAST_WEEKDAY = re.compile(r"^(\w+)#L$")
#: ``a/n`` in day-of-week runs to 7 (Sunday); cron-descriptor stops at Saturday.
_OPEN_STEP = re.compile(r"^(\w+)/(\d+)$")


def explain_cron(
    expression: str, *, dst_gap: str = DEFAULT_DST_GAP, dst_fold: str = DEFAULT_DST_FOLD
) -> str:
    """Two lines: ``expression`` in words, then what it does on DST changes.

    Validated first, so errors name the field (a six-field expression that reads correctly
    with its last field first is refused with the seconds-first rule). Macros (``@daily``)
    are described through their five fields; six fields have the seconds first.
    """
    from cron_descriptor import Options, get_description

    grid = timegrid.CronGrid(expression, dst_gap=dst_gap, dst_fold=dst_fold)
    normalised = grid.expression
    fields = timegrid.MACROS.get(normalised, normalised)
    options = Options()
    options.use_24hour_time_format = True
    sentence = str(get_description(_for_descriptor(fields), options))
    if normalised != fields:
        sentence = f"{sentence} ({normalised} = {fields})"
    elif len(fields.split()) == 6:
        sentence = f"{sentence} (six fields: the first is the seconds)"
    return f"{sentence}\n{grid.policy.describe(hourly_or_faster=grid.hourly_or_faster)}"


def _for_descriptor(fields: str) -> str:
    """``fields`` with the day-of-week items cron-descriptor misreads spelled its way."""
    *rest, weekday = fields.split()
    items = [
        _OPEN_STEP.sub(r"\1-7/\2", _LAST_WEEKDAY.sub(r"\1L", item)) for item in weekday.split(",")
    ]
    return " ".join([*rest, ",".join(items)])
