"""The ``postburner`` command line; ``postburner_py.cli:main`` is the console script."""

from postburner_py.cli.commands import main

__all__ = ["main"]
