"""Import path the shipped migrations use for column types; see
:mod:`postburner_py.store.engine`."""

from postburner_py.store.engine import Base, BigIntPK, JSONType, UTCDateTime, utcnow

__all__ = ["Base", "BigIntPK", "JSONType", "UTCDateTime", "utcnow"]
