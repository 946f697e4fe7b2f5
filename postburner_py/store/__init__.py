"""The storage role: tables, engines and the one storage seam, :class:`Store`.

:func:`store_for` returns the store of an engine, a connection or a session; every database
operation of the library is a method of it (see :mod:`postburner_py.store.base`).
"""

from postburner_py.store.base import Capabilities, Store
from postburner_py.store.registry import store_for

__all__ = ["Capabilities", "Store", "store_for"]
