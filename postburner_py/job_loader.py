"""Turning a stored ``job_class`` into something callable, allow-list first, import second."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from postburner_py.validation import check_job_allowed, validate_job_class


def resolve_job(job_class: str, allowed_prefixes: Sequence[str]) -> Callable[..., Any]:
    """The callable for ``job_class`` (``package.module:attr`` or ``package.module.attr``).

    The allow-list is checked before any import, so a refused name never runs module code.
    A class is instantiated and its ``perform`` returned; a function is returned as is.
    """
    validate_job_class(job_class)
    check_job_allowed(job_class, allowed_prefixes)
    module_name, attribute = _split(job_class)
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if inspect.isclass(target):
        perform = getattr(target(), "perform", None)
        if not callable(perform):
            raise TypeError(f"{job_class} is a class without a perform() method")
        return perform  # type: ignore[no-any-return]
    if not callable(target):
        raise TypeError(f"{job_class} is not callable")
    return target  # type: ignore[no-any-return]


def _split(job_class: str) -> tuple[str, str]:
    if ":" in job_class:
        module_name, _, attribute = job_class.partition(":")
    else:
        module_name, _, attribute = job_class.rpartition(".")
    return module_name, attribute
