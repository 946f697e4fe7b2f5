"""The complete table metadata: importing this module registers every table."""

from __future__ import annotations

from postburner_py.store import dispatch_log, history, models
from postburner_py.store.engine import Base

#: Modules that declare tables; imported for their side effect of registering them.
TABLE_MODULES = (models, dispatch_log, history)
target_metadata = Base.metadata
