"""The facet contracts of the storage seam (abstract base classes)."""
