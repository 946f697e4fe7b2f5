"""``python -m postburner_py`` runs the ``postburner`` command line."""

from postburner_py.cli import main

raise SystemExit(main())
