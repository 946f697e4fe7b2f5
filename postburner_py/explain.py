"""Cron expressions in words, for ``postburner explain``."""

from __future__ import annotations

from postburner_py import timegrid


def explain_cron(expression: str) -> str:
    """A human sentence for ``expression`` (validated first, so errors name the field).

    A six-field expression has its seconds field first, as cron-descriptor expects.
    """
    from cron_descriptor import Options, get_description

    options = Options()
    options.use_24hour_time_format = True
    return str(get_description(timegrid.validate_cron(expression), options))
