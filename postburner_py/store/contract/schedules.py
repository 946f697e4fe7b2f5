"""A facet of the storage seam; see the class docstring for what it covers."""

from __future__ import annotations

from abc import ABC

from postburner_py.store.facet import Facet


class ScheduleStore(Facet, ABC):
    """Locks, executions and the watchdog's repair passes.

    Every method takes the caller's session (or connection): it runs inside the caller's
    transaction and never commits or rolls it back unless its contract says so.
    """
