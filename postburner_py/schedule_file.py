"""Documented import path of the YAML schedule file; see
:mod:`postburner_py.schedules.schedule_file`."""

from postburner_py.schedules.schedule_file import (
    PLACEHOLDERS,
    QueueMove,
    ScheduleChange,
    ScheduleSpec,
    SyncPlan,
    default_env,
    load_schedule_file,
    read_entries,
    render_arguments,
    sync,
)

__all__ = [
    "PLACEHOLDERS",
    "QueueMove",
    "ScheduleChange",
    "ScheduleSpec",
    "SyncPlan",
    "default_env",
    "load_schedule_file",
    "read_entries",
    "render_arguments",
    "sync",
]
