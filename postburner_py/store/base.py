"""The storage seam: one :class:`Store` interface, one implementation per dialect family.

Everything the library asks of its database goes through a :class:`Store`: locking schedules,
creating executions, the gate (admit and settle a batch of deliveries), the dispatch log, the
job history, and the read side (status, listings). A store is stateless beyond its
:class:`Capabilities`, which are decided once per dialect family when the first engine of that
family is seen (:func:`postburner_py.store.store_for`); callers hand every method the
``Session`` (or connection) whose transaction the work belongs to, so transactions and their
boundaries stay with the caller, as the guarantees in ``docs/guarantees.md`` require.

The interface is the union of three facets, each an ABC whose methods are contracts:
:class:`~postburner_py.store.contract.schedules.ScheduleStore` (locks, executions, repair
passes), :class:`~postburner_py.store.contract.gate.GateStore` (admission, settlement, dispatch
log, history) and :class:`~postburner_py.store.contract.reports.ReportStore` (what status and
the command line read).
"""

from __future__ import annotations

from dataclasses import dataclass

from postburner_py.store.contract.gate import GateStore
from postburner_py.store.contract.reports import ReportStore
from postburner_py.store.contract.schedules import ScheduleStore


@dataclass(frozen=True)
class Capabilities:
    """What a dialect family can do, decided once; implementations branch on these flags.

    ``family`` names the implementation (``"postgresql"``, ``"sqlite"``). ``advisory_locks``:
    per-schedule locks are transaction-scoped advisory locks, so two passes can repair
    different schedules at once; without them the one write transaction covers every schedule
    (``single_writer``). ``batch_statement``: a whole ledger batch can be admitted or settled in
    one autocommitted statement (data-modifying CTEs over array parameters).
    ``array_parameters``: a list binds as one array parameter (``unnest``), so a batch query
    has one shape whatever its size. ``unparsable_instants``: instants are stored as text, so a
    hand-edited row may hold one that cannot be parsed and must be found in SQL before it is
    loaded. ``config_digests``: triggers (installed by PostgreSQL's migration) keep a digest
    of each schedule's and execution's configuration, so drift is one comparison of two
    columns; without them the snapshot is compared attribute by attribute.
    """

    family: str
    advisory_locks: bool
    single_writer: bool
    batch_statement: bool
    array_parameters: bool
    unparsable_instants: bool
    config_digests: bool


class Store(ScheduleStore, GateStore, ReportStore):
    """The one storage interface; see the facets for each method's contract."""


__all__ = ["Capabilities", "Store"]
