"""Every fenced block of README.md and docs/**/*.md is checked, so an example that breaks fails.

How a block is checked depends on its info string and on an optional directive, an HTML
comment on the line just before the fence (``<!-- doc: MODE -->``, invisible when rendered):

- ``python``, ``sh``/``shell``/``bash``: run as written (mode ``run``), each block in its own
  process. ``console``: the lines starting with ``$ `` are run in order (output lines are
  illustrations and are not compared). A non-zero exit fails, naming the file and line.
- ``<!-- doc: bounded=N -->`` for long-running blocks (``worker``, ``watchdog``, ``dev``): the
  block is started, must not fail within N seconds, is then sent SIGTERM and must stop.
- ``<!-- doc: parse -->`` for blocks that cannot run here (they need Docker, a particular
  history, or are the test command itself): every ``postburner ...`` line is parsed by the
  CLI's own argument parser, ``bash SCRIPT`` lines must name a script that ``bash -n``
  accepts, other shell lines must pass ``bash -n``; Python is compiled.
- ``yaml``: parsed with the schedule-file loader. ``<!-- doc: file=NAME -->`` also writes it
  to NAME in the working directory before any block of the Markdown file runs, so the
  commands around it can use it.
- ``text``: diagrams and sample output, not run.

A fence with no info string, or one not listed above, fails the run: a new example cannot
escape unchecked. Blocks of one file run in order in one fresh working directory, against a
fresh PostgreSQL database and the test Beanstalkd, with ``POSTBURNER_DATABASE_URL``,
``POSTBURNER_BEANSTALKD_URL``, ``POSTBURNER_NAMESPACE`` and ``POSTBURNER_SECRET`` set, the
venv's ``bin`` first on ``PATH`` and ``tests/docs_app`` (the ``myapp`` package the examples
import) on ``PYTHONPATH``. Python blocks also have the example URLs
``postgresql+psycopg://app@db/app`` and ``beanstalk://127.0.0.1:11300`` replaced by the test
servers' URLs, so examples keep showing realistic addresses.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS_APP = Path(__file__).resolve().parent / "docs_app"
EXAMPLE_DATABASE_URL = "postgresql+psycopg://app@db/app"
EXAMPLE_BEANSTALKD_URL = "beanstalk://127.0.0.1:11300"
RUNNABLE = {"python", "sh", "shell", "bash", "console"}
KINDS = RUNNABLE | {"yaml", "text"}
BLOCK_TIMEOUT = 60
STOP_GRACE = 15

#: Runs a Python block compiled under its Markdown name, so tracebacks say ``README.md:47``.
_EXEC_AS_MARKDOWN = (
    "import sys; path, name = sys.argv[1], sys.argv[2].split(':')[0]; "
    "exec(compile(open(path).read(), name, 'exec'), {'__name__': '__main__'})"
)
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*doc:\s*(?P<mode>[a-z]+)(?:=(?P<value>\S+))?\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its directive and its text."""

    path: Path
    line: int  # of the first line inside the fence, 1-based
    kind: str
    mode: str
    value: str | None
    text: str

    @property
    def where(self) -> str:
        shown = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
        return f"{shown}:{self.line}"


def markdown_files() -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        indent = len(fence.group("indent"))
        body = "\n".join(line[indent:] for line in lines[index + 1 : end]) + "\n"
        directive = _DIRECTIVE.match(lines[index - 1]) if index else None
        mode = directive.group("mode") if directive else "run"
        value = directive.group("value") if directive else None
        blocks.append(Block(path, index + 2, fence.group("info").strip(), mode, value, body))
        index = end + 1
    return blocks


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(REPO)))
def test_every_block_has_a_known_kind_and_way_to_be_checked(path: Path) -> None:
    for block in blocks_of(path):
        assert block.kind in KINDS, (
            f"{block.where}: fenced block with info string {block.kind!r}; give it one of "
            f"{sorted(KINDS)} (text for diagrams and sample output)"
        )
        assert block.mode in ("run", "parse", "bounded", "file"), f"{block.where}: unknown mode"
        if block.mode == "bounded":
            assert block.value and block.value.isdigit(), f"{block.where}: bounded=SECONDS"
        if block.mode == "file":
            assert block.kind == "yaml" and block.value, f"{block.where}: file=NAME on yaml"


@pytest.mark.parametrize(
    "path",
    [
        path
        for path in markdown_files()
        if any(b.kind in RUNNABLE | {"yaml"} for b in blocks_of(path))
    ],
    ids=lambda path: str(path.relative_to(REPO)),
)
def test_the_examples_run_as_written(
    path: Path, postgres_url: str, beanstalkd_server: Any, namespace: str, tmp_path: Path
) -> None:
    runner = Runner(tmp_path, _environment(postgres_url, beanstalkd_server.url, namespace))
    blocks = blocks_of(path)
    runner.write_files(blocks)
    for block in blocks:
        runner.check(block)


def _environment(database_url: str, beanstalkd_url: str, namespace: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTBURNER_")}
    env.update(
        POSTBURNER_DATABASE_URL=database_url,
        POSTBURNER_BEANSTALKD_URL=beanstalkd_url,
        POSTBURNER_NAMESPACE=namespace,
        POSTBURNER_SECRET="docs-secret",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(DOCS_APP), env.get("PYTHONPATH")])),
    )
    return env


@dataclass
class Runner:
    """Checks the blocks of one Markdown file in one working directory."""

    cwd: Path
    env: dict[str, str]

    def check(self, block: Block) -> None:
        if block.kind == "text":
            return
        if block.kind == "yaml":
            self._yaml(block)
        elif block.mode == "parse":
            self._parse(block)
        elif block.kind == "python":
            script = self._python_file(block)
            self._start(block, [sys.executable, "-c", _EXEC_AS_MARKDOWN, script, block.where])
        else:
            self._start(block, ["bash", "-euo", "pipefail", "-c", self._shell(block)])

    def write_files(self, blocks: list[Block]) -> None:
        """Write the blocks marked ``file=NAME`` into the working directory."""
        for block in blocks:
            if block.mode == "file" and block.value:
                (self.cwd / block.value).write_text(block.text, encoding="utf-8")

    def _servers(self, text: str) -> str:
        text = text.replace(EXAMPLE_DATABASE_URL, self.env["POSTBURNER_DATABASE_URL"])
        return text.replace(EXAMPLE_BEANSTALKD_URL, self.env["POSTBURNER_BEANSTALKD_URL"])

    def _python_file(self, block: Block) -> str:
        # Blank lines first, so a traceback's line number is the Markdown file's.
        script = self.cwd / f".doc_block_{block.line}.py"
        script.write_text("\n" * (block.line - 1) + self._servers(block.text), encoding="utf-8")
        return str(script)

    def _shell(self, block: Block) -> str:
        if block.kind != "console":
            return self._servers(block.text)
        commands = [line[2:] for line in block.text.splitlines() if line.startswith("$ ")]
        return self._servers("\n".join(commands))

    def _start(self, block: Block, argv: list[str]) -> None:
        process = subprocess.Popen(
            argv,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        bound = int(block.value) if block.mode == "bounded" and block.value else None
        try:
            output, _ = process.communicate(timeout=bound or BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            if bound is None:
                _stop(process)
                pytest.fail(f"{block.where}: still running after {BLOCK_TIMEOUT} s", False)
            output = _stop(process)
            assert process.returncode in (0, -signal.SIGTERM), (
                f"{block.where}: did not stop cleanly on SIGTERM ({process.returncode}):\n{output}"
            )
            return
        assert process.returncode == 0, (
            f"{block.where}: {block.kind} block exited {process.returncode}:\n{output}"
        )

    def _parse(self, block: Block) -> None:
        if block.kind == "python":
            compile(block.text, block.where, "exec")
            return
        for command in _commands(self._shell(block) if block.kind == "console" else block.text):
            _parse_command(block, command)

    def _yaml(self, block: Block) -> None:
        from postburner_py.schedules.schedule_file import read_entries

        if "jobs:" in block.text:
            assert read_entries(block.text, env="production"), block.where
        else:
            import yaml

            yaml.safe_load(block.text)


def _stop(process: subprocess.Popen[str]) -> str:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"did not stop within {STOP_GRACE} s of SIGTERM:\n{output}", False)
    return output


def _commands(script: str) -> list[str]:
    """The script's commands, one per line, continuations joined and comments dropped."""
    joined = script.replace("\\\n", " ")
    return [line for line in (raw.split(" #")[0].strip() for raw in joined.splitlines()) if line]


def _parse_command(block: Block, command: str) -> None:
    from postburner_py.cli.commands import build_parser

    words = shlex.split(command)
    if words[0] == "postburner":
        try:
            build_parser().parse_args(words[1:])
        except SystemExit as exc:
            pytest.fail(f"{block.where}: `{command}` does not parse (exit {exc.code})", False)
        return
    if words[0] == "bash" and len(words) > 1 and words[1].endswith(".sh"):
        target = REPO / words[1]
        assert target.is_file(), f"{block.where}: {words[1]} does not exist"
        argv = ["bash", "-n", str(target)]
    else:
        argv = ["bash", "-n", "-c", command]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    assert result.returncode == 0, f"{block.where}: `{command}`: {result.stderr}"


def test_a_block_that_breaks_fails_naming_its_file_and_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n```sh\ntrue\n```\n\n```sh\nexit 3\n```\n", encoding="utf-8")
    runner = Runner(
        tmp_path, _environment("sqlite:///unused.sqlite3", "beanstalk://127.0.0.1:1", "t")
    )
    first, broken = blocks_of(page)
    runner.check(first)
    with pytest.raises(AssertionError, match=r"page\.md:8: sh block exited 3"):
        runner.check(broken)


def test_a_fence_without_a_kind_is_found_and_directives_are_read(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```\nplain\n```\n<!-- doc: bounded=3 -->\n```python\nimport time\n```\n",
        encoding="utf-8",
    )
    plain, bounded = blocks_of(page)
    assert (plain.kind, plain.mode) == ("", "run")
    assert plain.kind not in KINDS
    assert (bounded.kind, bounded.mode, bounded.value, bounded.line) == (
        "python",
        "bounded",
        "3",
        6,
    )
