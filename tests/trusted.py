"""Jobs under the allow-list tests' prefix ``tests.trusted``, and names that are not jobs.

The module imports names from elsewhere, as application modules do: a job_class naming one of
them (``tests.trusted:system``, ``tests.trusted:imported_run``, ``tests.trusted:os``), or a
path through one (``tests.trusted:jobs.record_run``), must be refused, never called.
"""

from __future__ import annotations

import os  # noqa: F401  (a module: never a job)
from os import system  # noqa: F401  (defined in another module: never a job)
from typing import Any

from tests import jobs  # noqa: F401  (a module: 'tests.trusted:jobs.record_run' walks it)
from tests.jobs import record_run
from tests.jobs import record_run as imported_run  # noqa: F401  (defined elsewhere; records)


def run(*args: Any, **kwargs: Any) -> None:
    """A job defined here."""
    record_run(*args, **kwargs)


class Report:
    """A class-style job defined here: instantiated, then ``perform`` is called."""

    def perform(self, *args: Any, **kwargs: Any) -> None:
        record_run(*args, **kwargs)
