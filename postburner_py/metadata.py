"""The complete table metadata: importing this module registers every table."""

from __future__ import annotations

from postburner_py import delayed_jobs, dispatch_log, history, models, watchdog
from postburner_py.db import Base

#: Modules that declare tables; imported for their side effect of registering them.
TABLE_MODULES = (models, dispatch_log, history, delayed_jobs, watchdog)
target_metadata = Base.metadata
