"""Generic SQLAlchemy implementations of the facets."""
