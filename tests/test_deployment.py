"""Deployment files: every ``postburner`` command line in them is one the CLI accepts."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from postburner_py.cli import commands as cli

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
WATCHDOG = REPO / "watchdog"


def _compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _compose_commands() -> list[list[str]]:
    commands = []
    for service in _compose()["services"].values():
        command = service.get("command")
        if command is not None:
            commands.append(shlex.split(command) if isinstance(command, str) else list(command))
    return commands


def _procfile_commands() -> list[list[str]]:
    lines = (WATCHDOG / "Procfile").read_text(encoding="utf-8").splitlines()
    return [shlex.split(line.split(":", 1)[1]) for line in lines if line.strip()]


def _systemd_commands() -> list[list[str]]:
    """The ``Exec*=`` lines of the unit (systemd allows several, so not configparser)."""
    lines = (WATCHDOG / "postburner-watchdog.service").read_text(encoding="utf-8").splitlines()
    return [
        shlex.split(line.split("=", 1)[1].lstrip("-@+!:"))
        for line in lines
        if line.startswith("Exec") and "=" in line
    ]


def _kubernetes_commands() -> list[list[str]]:
    commands = []
    manifests = yaml.safe_load_all((WATCHDOG / "kubernetes.yaml").read_text(encoding="utf-8"))
    for manifest in manifests:
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            commands.append([*container.get("command", []), *container.get("args", [])])
    return commands


def _postburner_invocations() -> list[tuple[str, list[str]]]:
    """``(source, arguments after 'postburner')`` of every command line in the files."""
    sources = {
        "docker-compose.yml": _compose_commands(),
        "watchdog/Procfile": _procfile_commands(),
        "watchdog/postburner-watchdog.service": _systemd_commands(),
        "watchdog/kubernetes.yaml": _kubernetes_commands(),
    }
    found = []
    for source, commands in sources.items():
        for tokens in commands:
            for index, token in enumerate(tokens):
                if Path(token).name == "postburner":
                    found.append((source, tokens[index + 1 :]))
    return found


def test_the_deployment_files_run_the_expected_commands() -> None:
    commands = {(source, arguments[0]) for source, arguments in _postburner_invocations()}
    assert {
        ("docker-compose.yml", "migrate"),
        ("docker-compose.yml", "watchdog"),
        ("docker-compose.yml", "worker"),
        ("watchdog/Procfile", "watchdog"),
        ("watchdog/postburner-watchdog.service", "watchdog"),
        ("watchdog/kubernetes.yaml", "watchdog"),
    } <= commands


@pytest.mark.parametrize(
    ("source", "arguments"),
    _postburner_invocations(),
    ids=lambda value: value if isinstance(value, str) else " ".join(value),
)
def test_every_postburner_command_line_is_one_the_cli_accepts(
    source: str, arguments: list[str]
) -> None:
    parser = cli.build_parser()
    known = cli.subcommands(parser)
    assert arguments[0] in known, (
        f"{source}: `postburner {' '.join(arguments)}`: {arguments[0]!r} is not a subcommand "
        f"(known: {', '.join(known)})"
    )
    try:
        parser.parse_args(arguments)
    except SystemExit:
        pytest.fail(f"{source}: `postburner {' '.join(arguments)}` does not parse", pytrace=False)


def test_compose_keeps_the_beanstalkd_binlog_on_a_volume() -> None:
    services = _compose()["services"]
    beanstalkd = services["beanstalkd"]
    command = beanstalkd["command"]
    binlog = command[command.index("-b") + 1]
    assert any(volume.endswith(f":{binlog}") for volume in beanstalkd["volumes"])
    assert services["migrate"]["restart"] == "no"
    for name in ("watchdog", "worker"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
        assert "container_name" not in services[name]  # scalable: --scale worker=N


def test_compose_reads_the_settings_from_an_env_file() -> None:
    services = _compose()["services"]
    for name in ("migrate", "watchdog", "worker"):
        assert services[name]["env_file"] == "postburner.env"
        assert "environment" not in services[name]
    header = COMPOSE.read_text(encoding="utf-8")
    for variable in ("POSTBURNER_DATABASE_URL", "POSTBURNER_BEANSTALKD_URL", "POSTBURNER_SECRET"):
        assert f"#   {variable}=" in header
