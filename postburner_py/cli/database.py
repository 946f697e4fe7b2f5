"""``postburner init`` and ``postburner migrate``: starter files and the schema."""

from __future__ import annotations

import argparse
from typing import Any

from postburner_py.cli.parser import EXIT_OK, postburner


def add_init(commands: Any) -> None:
    command = commands.add_parser(
        "init", help="write postburner.env and an example schedules.yml (never overwrites)"
    )
    command.add_argument("--dir", default=".", help="where to write them (default: here)")
    command.set_defaults(handler=_run_init)


def _run_init(args: argparse.Namespace) -> int:
    from postburner_py.cli.admin import write_starter_files

    for path in write_starter_files(args.dir):
        print(f"wrote {path}")
    print("next: edit them, then `postburner migrate` and `postburner sync schedules.yml`")
    return EXIT_OK


def add_migrate(commands: Any) -> None:
    command = commands.add_parser("migrate", help="upgrade the database schema to the latest")
    command.set_defaults(handler=_run_migrate)


def _run_migrate(args: argparse.Namespace) -> int:
    with postburner(args) as pb:
        pb.migrate()
        print(f"migrated {pb.engine.url.render_as_string(hide_password=True)} to head")
    return EXIT_OK
