"""Jobs the documentation's examples name (``myapp.jobs:send_report`` ...)."""

from __future__ import annotations

from typing import Any


def send_report(*args: Any, **kwargs: Any) -> None:
    """The README's daily report."""


def pulse(*args: Any, **kwargs: Any) -> None:
    """A frequent heartbeat."""


def remind(*args: Any, **kwargs: Any) -> None:
    """The README's one-off reminder."""


def flaky(*args: Any, **kwargs: Any) -> None:
    """Fails its first attempt (the retry examples): later attempts succeed."""
    from postburner_py.context import current_execution

    if current_execution().attempt == 1:
        raise ConnectionError("the upstream API timed out")
