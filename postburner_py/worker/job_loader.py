"""Turning a stored ``job_class`` into something callable, allow-list first, import second."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from postburner_py.errors import JobNotAllowedError
from postburner_py.validation import check_job_allowed, split_job_class


def resolve_job(job_class: str, allowed_prefixes: Sequence[str]) -> Callable[..., Any]:
    """The callable ``job_class`` names (``package.module:attr`` or ``package.module.attr``).

    The spelling rule and the allow-list are checked before any import
    (:func:`~postburner_py.validation.check_job_allowed`), so a refused name never runs module
    code. After the import, ``attr`` must be a function or class *defined in* that module: in
    its namespace (not a builtin, not served by a module ``__getattr__``), not a module, and
    with ``__module__`` naming the module (a name the module imported from elsewhere is
    refused, as is anything reached through another module). A class is instantiated with no
    arguments and its ``perform`` returned; a function is returned as it is.

    Raises :class:`JobNotAllowedError` for a refused name, :class:`ImportError` when the module
    cannot be imported, :class:`AttributeError` when it defines no ``attr``, :class:`TypeError`
    when the object cannot be called.
    """
    check_job_allowed(job_class, allowed_prefixes)
    module_name, attribute = split_job_class(job_class)
    module = importlib.import_module(module_name)
    target = _defined_in(module, module_name, attribute)
    if inspect.isclass(target):
        perform = getattr(target(), "perform", None)
        if not callable(perform):
            raise TypeError(f"{job_class} is a class without a perform() method")
        return perform  # type: ignore[no-any-return]
    if not callable(target):
        raise TypeError(f"{job_class} is not callable")
    return target  # type: ignore[no-any-return]


def _defined_in(module: Any, module_name: str, attribute: str) -> Any:
    """``attribute`` of ``module`` if the module itself defines it (see :func:`resolve_job`)."""
    namespace = vars(module)
    if attribute not in namespace:
        raise AttributeError(f"module {module_name!r} defines no {attribute!r}")
    target = namespace[attribute]
    if inspect.ismodule(target):
        raise JobNotAllowedError(
            "job_class",
            f"{module_name}:{attribute} is the module {target.__name__!r}, not a job defined "
            f"in {module_name!r}",
        )
    defined_by = getattr(target, "__module__", None)
    if defined_by != module_name:
        raise JobNotAllowedError(
            "job_class",
            f"{module_name}:{attribute} is defined in {defined_by!r}, not in {module_name!r}; "
            "name the module that defines it (and allow that module)",
        )
    return target
