"""Results: the median, min and max of each figure over the runs, written as results.json and
RESULTS.md, and one summary line per scenario."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import greenstalk
import psycopg

from bench.common import ROOT, beanstalkd_address
from bench.procfs import cpu_jiffies, steal_percent

if TYPE_CHECKING:
    from bench.common import Servers
    from bench.run import Scenario, Sizes

COMMAND = "python bench/run.py"
PACKAGES = ("postburner_py", "SQLAlchemy", "psycopg", "greenstalk", "APScheduler", "alembic")


class Report:
    """Everything one harness run measured, and where it ran."""

    def __init__(self, *, sizes: Sizes, smoke: bool) -> None:
        self._started = time.monotonic()
        self._cpu_before = cpu_jiffies()
        self.data: dict[str, Any] = {
            "complete": False,
            "mode": "smoke" if smoke else "full",
            "command": COMMAND + (" --smoke" if smoke else ""),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "runs": sizes.runs,
            "machine": machine(),
            "versions": versions(),
            "load_before": load(),
            "sizes": dataclasses.asdict(sizes),
            "scenarios": {},
        }

    def describe_servers(self, servers: Servers) -> None:
        """Record the server versions."""
        with psycopg.connect(servers.pg.admin_url) as connection:
            row = connection.execute("SHOW server_version").fetchone()
        address = beanstalkd_address(servers.beanstalkd.url)
        with greenstalk.Client(address) as client:
            beanstalkd = client.stats()["version"]
        self.data["versions"].update(PostgreSQL=row[0] if row else "?", Beanstalkd=str(beanstalkd))

    def add(self, scenario: Scenario, runs: list[dict[str, float]]) -> str:
        """Aggregate one scenario's runs; its one-line summary."""
        figures = aggregate(runs)
        sizes = self.data["sizes"]
        headlines = [
            {
                "label": h.label.format(**sizes),
                "unit": h.unit,
                "better": h.better,
                "ours": figures[h.ours],
                "other": figures[h.other],
                "ratio": figures[h.ratio],
            }
            for h in scenario.headlines
        ]
        line = summary_line(scenario.name, headlines)
        self.data["scenarios"][scenario.name] = {
            "title": scenario.title.format(**sizes),
            "peer": scenario.peer,
            "headlines": headlines,
            "figures": figures,
            "runs": runs,
            "summary": line,
        }
        return line

    def write(self, out: Path, *, complete: bool) -> None:
        """Write results.json and RESULTS.md into ``out``."""
        self.data.update(
            complete=complete,
            load_after=load(),
            steal_pct=round(steal_percent(self._cpu_before, cpu_jiffies()), 1),
            duration_s=round(time.monotonic() - self._started, 1),
        )
        (out / "results.json").write_text(json.dumps(self.data, indent=2, sort_keys=False) + "\n")
        (out / "RESULTS.md").write_text(markdown(self.data))


def aggregate(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per figure: median, min and max over the runs that measured it, and how many did."""
    keys = dict.fromkeys(key for run in runs for key in run)
    figures = {}
    for key in keys:
        values = [float(run[key]) for run in runs if key in run]
        figures[key] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "n": len(values),
        }
    return figures


def fmt(value: float) -> str:
    """A figure with the digits worth reading."""
    size = abs(value)
    if value == int(value):
        return f"{int(value):,}"
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def spread_of(figure: dict[str, float]) -> str:
    """``median [min, max]``, or the value alone when it was measured once or never varied."""
    if figure["n"] == 1 or figure["min"] == figure["max"]:
        return fmt(figure["median"])
    return f"{fmt(figure['median'])} [{fmt(figure['min'])}, {fmt(figure['max'])}]"


def summary_line(name: str, headlines: list[dict[str, Any]]) -> str:
    """``name: figure ours vs theirs (xratio); ...`` with medians."""
    parts = [
        f"{h['label']}: {fmt(h['ours']['median'])} vs {fmt(h['other']['median'])} {h['unit']} "
        f"(x{fmt(h['ratio']['median'])}, {h['better']} is better)"
        for h in headlines
    ]
    return f"{name} | " + " | ".join(parts)


def markdown(data: dict[str, Any]) -> str:
    """RESULTS.md."""
    machine_, versions_ = data["machine"], data["versions"]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{data['command']}` on {data['date']} (UTC) in "
        f"{data.get('duration_s', 0) / 60:.1f} min. Each figure is the **median of "
        f"{data['runs']} run(s)**, with [min, max] when they differ. Ratios are ours ÷ the floor "
        "or peer measured in the same run. How each scenario is measured: "
        "[README.md](README.md). Figure names end in their unit: `_s` seconds, `_ms` "
        "milliseconds, `_mb` MiB, `_per_s` per second, `_pct` percent; `ratio*` is ours ÷ "
        "theirs.",
        "",
    ]
    if not data["complete"]:
        lines += ["**Incomplete: the run stopped before every scenario finished.**", ""]
    lines += [
        "## Machine",
        "",
        f"- CPU: {machine_['cpu']}, {machine_['cores']} cores; RAM {machine_['ram_gib']} GiB",
        f"- OS: {machine_['os']}; Python {machine_['python']}",
        f"- Load before (`uptime`): {data['load_before']}",
        f"- Load after: {data.get('load_after', '?')}",
        f"- CPU time stolen by other guests of the host during the run: "
        f"{data.get('steal_pct', '?')}% (`machine_steal_pct` per run, `c1_steal_pct` and "
        "`c4_steal_pct` per drain). The host is shared: runs with much stolen time are "
        "slower and not comparable with quiet ones.",
        "",
        "## Versions",
        "",
        ", ".join(f"{name} {version}" for name, version in versions_.items()),
        "",
        "## Summary",
        "",
        "| Scenario | Figure | Ours | Floor or peer | Ratio | Better |",
        "|---|---|---|---|---|---|",
    ]
    for name, scenario in data["scenarios"].items():
        for h in scenario["headlines"]:
            lines.append(
                f"| {name} | {h['label']} ({h['unit']}) | {spread_of(h['ours'])} | "
                f"{spread_of(h['other'])} | {spread_of(h['ratio'])} | {h['better']} |"
            )
    for scenario in data["scenarios"].values():
        lines += ["", f"## {scenario['title']}", "", scenario["peer"].capitalize() + ".", ""]
        lines += ["| Figure | Median | Min | Max | Runs |", "|---|---|---|---|---|"]
        for key, figure in scenario["figures"].items():
            lines.append(
                f"| {key} | {fmt(figure['median'])} | {fmt(figure['min'])} | "
                f"{fmt(figure['max'])} | {figure['n']} |"
            )
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """CPU, cores, memory, OS and Python of this machine."""
    cpu = platform.processor() or platform.machine()
    ram_kb = 0
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_kb = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram_kb / 1024 / 1024, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    """Package versions, and the commit the code was at."""
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    found["commit"] = _git_commit()
    return found


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def load() -> str:
    """``uptime``'s load averages (os.getloadavg where ``uptime`` is missing)."""
    try:
        text = subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout
        return "load average: " + text.split("load average:", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError, IndexError):
        one, five, fifteen = os.getloadavg()
        return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}"
