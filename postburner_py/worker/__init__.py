"""The worker role: reserve delivered jobs, pass the gate, run them, chain, record.

``postburner_py.worker`` is the documented import path of :class:`Worker` and
:func:`run_worker`; the process itself lives in :mod:`postburner_py.worker.process`.
"""

from postburner_py.worker.process import Worker, run_worker

__all__ = ["Worker", "run_worker"]
