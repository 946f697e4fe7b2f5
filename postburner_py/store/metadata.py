"""The complete table metadata: importing this module registers every table."""

from __future__ import annotations

from postburner_py.schedules import one_off as delayed_jobs
from postburner_py.store import dispatch_log, history, models
from postburner_py.store.engine import Base
from postburner_py.watchdog import process as watchdog

#: Modules that declare tables; imported for their side effect of registering them.
TABLE_MODULES = (models, dispatch_log, history, delayed_jobs, watchdog)
target_metadata = Base.metadata
