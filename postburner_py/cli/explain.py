"""Cron expressions in words, for ``postburner explain``."""

from __future__ import annotations

from postburner_py.timegrid import grid as timegrid


def explain_cron(expression: str) -> str:
    """A human sentence for ``expression`` (validated first, so errors name the field).

    Macros (``@daily``) are described through their five fields; a six-field expression has
    its seconds field first, as cron-descriptor expects.
    """
    from cron_descriptor import Options, get_description

    normalised = timegrid.validate_cron(expression)
    fields = timegrid.MACROS.get(normalised, normalised)
    options = Options()
    options.use_24hour_time_format = True
    sentence = str(get_description(fields, options))
    return f"{sentence} ({normalised} = {fields})" if normalised != fields else sentence
