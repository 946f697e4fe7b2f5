"""Schedule files: schedules declared in YAML (Kaal's shape) and ``sync`` that applies them.

The file has a ``defaults`` section and one section per environment; the environment's
section is deep-merged over ``defaults`` (job entries are matched by ``key``)::

    defaults:
      jobs:
        - key: "reports:daily"            # the schedule's name
          cron: "0 9 * * MON-FRI"
          timezone: "Europe/Prague"
          job_class: "myapp.jobs:send_report"
          kwargs: {day: "{{fire_time.iso8601}}", dedupe: "{{idempotency_key}}"}
    production:
      jobs:
        - key: "reports:daily"
          queue: "reports"                # overrides one field for production only

:func:`sync` makes the database match the file in one transaction: it creates and updates
schedules by name (assigning only the fields that differ, so a second run changes nothing),
disables the schedules the file does not mention (deletes them with ``prune``), and reports
what it did, or with ``dry_run`` what it would do, as a :class:`SyncPlan`.

Placeholders in ``args`` and ``kwargs`` (``{{fire_time.iso8601}}``, ``{{fire_time.unix}}``,
``{{idempotency_key}}``, ``{{key}}``) are checked at sync time and filled for each occurrence
by :func:`render_arguments` (from :mod:`postburner_py.schedules.placeholders`, re-exported here).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy.orm import Session

from postburner_py.errors import ScheduleFileError, ScheduleValidationError
from postburner_py.schedules.placeholders import NAMES, is_escaped, render_arguments
from postburner_py.store.models import CACHEABLE_ATTRIBUTES, Schedule
from postburner_py.timegrid import grid as timegrid
from postburner_py.validation import check_job_allowed

if TYPE_CHECKING:
    from postburner_py.app import Postburner

__all__ = [
    "PLACEHOLDERS",
    "QueueMove",
    "ScheduleChange",
    "ScheduleSpec",
    "SyncAction",
    "SyncPlan",
    "default_env",
    "load_schedule_file",
    "read_entries",
    "render_arguments",
    "sync",
]

DEFAULT_ENV = "production"
DEFAULTS_SECTION = "defaults"
#: The schedule attributes an entry sets, besides ``key`` (the schedule's name).
SCHEDULE_FIELDS = (
    "job_class",
    "args",
    "kwargs",
    "queue",
    "priority",
    "ttr",
    "max_attempts",
    "timeout",
    "no_retry_on",
    "overlap",
    "jitter",
    "timezone",
    "cron",
    "anchor",
    "interval",
    "interval_unit",
    "dst_gap",
    "dst_fold",
    "catch_up",
    "catch_up_window",
    "starts_at",
    "ends_at",
    "enabled",
    "description",
)
ENTRY_FIELDS = ("key", *SCHEDULE_FIELDS)
PLACEHOLDERS = NAMES

_BRACES = re.compile(r"\{\{\s*(.*?)\s*\}\}")
#: What a file may hold and expand to. Aliases (``*name``) share structure when loaded but
#: expand when stored, so the file's nodes are counted as if every alias were copied out.
MAX_FILE_BYTES = 1_048_576
MAX_YAML_DEPTH = 48
MAX_ALIASES = 10_000
MAX_EXPANDED_NODES = 200_000
_REQUEUE_FIELDS = frozenset(CACHEABLE_ATTRIBUTES) | {"enabled"}


class SyncAction(StrEnum):
    """What sync does to one schedule (equal to the strings of ``--json``'s ``action``)."""

    CREATE = "create"
    UPDATE = "update"
    DISABLE = "disable"
    DELETE = "delete"


#: The type of :attr:`ScheduleChange.action` (a plain string of the same value also matches).
Action = SyncAction
_VERBS: tuple[tuple[Action, str, str], ...] = (
    (SyncAction.CREATE, "create", "created"),
    (SyncAction.UPDATE, "update", "updated"),
    (SyncAction.DISABLE, "disable", "disabled"),
    (SyncAction.DELETE, "delete", "deleted"),
)


def default_env() -> str:
    """The environment section to use: ``POSTBURNER_ENV``, else ``production``."""
    return os.environ.get("POSTBURNER_ENV") or DEFAULT_ENV


# --- placeholders ----------------------------------------------------------------------------


def _unknown_placeholders(value: Any, path: str) -> list[tuple[str, str]]:
    """``(path, text)`` of every ``{{...}}`` in ``value`` that is not a known placeholder.

    Deliberately broader than the renderer's pattern: any ``{{...}}`` text must name a
    placeholder, so a typo such as ``{{Fire_time.unix}}`` is refused instead of passed on.
    """
    if isinstance(value, str):
        return [
            (path, m.group(0))
            for m in _BRACES.finditer(value)
            if m.group(1) not in NAMES and not is_escaped(value, m.start())
        ]
    if isinstance(value, list):
        children = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    elif isinstance(value, dict):
        children = [(f"{path}.{name}", item) for name, item in value.items()]
    else:
        return []
    return [hit for child_path, item in children for hit in _unknown_placeholders(item, child_path)]


# --- reading a file --------------------------------------------------------------------------


@dataclass(frozen=True)
class JobEntry:
    """One job of a schedule file after merging ``defaults`` with the environment."""

    location: str
    fields: dict[str, Any]

    @property
    def key(self) -> str:
        """The schedule name."""
        return str(self.fields["key"])

    @property
    def label(self) -> str:
        """Where the entry is, for error messages: ``defaults.jobs[3] (key 'reports:daily')``."""
        return f"{self.location} (key {self.key!r})"


@dataclass(frozen=True)
class ScheduleSpec:
    """A validated entry and the (unsaved) :class:`Schedule` it declares."""

    location: str
    schedule: Schedule

    @property
    def name(self) -> str:
        """The schedule name (the entry's ``key``)."""
        return self.schedule.name


def load_schedule_file(
    path: str | Path,
    *,
    env: str,
    allowed_job_prefixes: tuple[str, ...] = (),
    now: datetime | None = None,
) -> list[ScheduleSpec]:
    """Read, merge and validate a schedule file; raises :class:`ScheduleFileError` naming the
    file, the entry and the field of the first problem. Writes nothing.

    The checks are the ones a save runs (so ``sync --dry-run`` and ``sync`` agree), with
    ``now`` (default: the wall clock) as the instant the first occurrence is counted from.
    A file over :data:`MAX_FILE_BYTES` is refused before it is read.
    """
    try:
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScheduleFileError(
                f"is {size} bytes; a schedule file holds at most {MAX_FILE_BYTES}"
            )
        entries = read_entries(Path(path).read_text(encoding="utf-8"), env=env)
        return [_build(entry, allowed_job_prefixes, now) for entry in entries]
    except ScheduleFileError as exc:
        raise ScheduleFileError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ScheduleFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ScheduleFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def read_entries(text: str, *, env: str) -> list[JobEntry]:
    """The job entries of a schedule file's text for ``env``, merged, in file order.

    Refuses, before building anything big, a text over :data:`MAX_FILE_BYTES` characters,
    nesting deeper than :data:`MAX_YAML_DEPTH`, more than :data:`MAX_ALIASES` aliases, and
    a document that would expand to more than :data:`MAX_EXPANDED_NODES` nodes.
    """
    if len(text) > MAX_FILE_BYTES:
        raise ScheduleFileError(
            f"is {len(text)} characters; a schedule file holds at most {MAX_FILE_BYTES}"
        )
    sections = _sections(_parse_yaml(text), env)
    merged: dict[str, JobEntry] = {}
    for name, section in sections:
        for entry in _section_jobs(name, section):
            base = merged.get(entry.key)
            merged[entry.key] = entry if base is None else _merge_entry(base, entry)
    return list(merged.values())


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a mapping key given twice (YAML would keep the last) and a
    document past the bounds of :func:`read_entries`, counted while it is composed."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _bound(event, f"more than {MAX_ALIASES} aliases")
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _bound(event, f"nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = self._sizes.get(id(node))
        if size is None:
            if isinstance(event, yaml.AliasEvent):
                raise _bound(event, f"alias *{event.anchor} refers to its own anchor")
            size = self._expanded(node)
            self._sizes[id(node)] = size
        return node

    def _expanded(self, node: Any) -> int:
        """Nodes ``node`` stands for with every alias copied out (children are known)."""
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            return 1
        size = 1 + sum(self._sizes[id(child)] for child in children)
        if size > MAX_EXPANDED_NODES:
            raise _bound(node, f"expands to more than {MAX_EXPANDED_NODES} values (aliases)")
        return size


def _bound(where: Any, problem: str) -> ScheduleFileError:
    line = where.start_mark.line + 1 if where.start_mark is not None else "?"
    return ScheduleFileError(f"line {line}: {problem}; a schedule file may not grow that large")


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        if key_node.tag == _MERGE_TAG:  # ``<<: *anchor``: its keys may be overridden here
            continue
        name = loader.construct_object(key_node)
        if not _hashable(name):
            raise ScheduleFileError(
                f"line {key_node.start_mark.line + 1}: a {_kind(name)} cannot be a mapping key; "
                "use text"
            )
        if name in seen:
            raise ScheduleFileError(f"line {key_node.start_mark.line + 1}: {name!r} is given twice")
        seen.add(name)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=True))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except ScheduleFileError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScheduleFileError(f"{where}not valid YAML: {problem}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # A scalar YAML types but cannot build (2025-13-45), or a key merged in by ``<<``
        # that cannot be hashed: the file is wrong, not the program.
        raise ScheduleFileError(f"not a valid schedule file: {exc}") from None


def _sections(document: Any, env: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(document, dict):
        raise ScheduleFileError("expected a mapping with a 'defaults' and/or environment sections")
    names = [name for name in (DEFAULTS_SECTION, env) if name in document]
    if not names:
        present = ", ".join(map(str, document)) or "none"
        raise ScheduleFileError(
            f"no {DEFAULTS_SECTION!r} section and no section for environment {env!r} "
            f"(sections: {present}); pass --env or set POSTBURNER_ENV"
        )
    return [(name, _section(name, document[name])) for name in names]


def _section(name: str, section: Any) -> dict[str, Any]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ScheduleFileError(f"{name}: expected a mapping with 'jobs', got {_kind(section)}")
    unknown = [key for key in section if key != "jobs"]
    if unknown:
        raise ScheduleFileError(f"{name}: unknown setting {unknown[0]!r}; a section holds 'jobs'")
    return section


def _section_jobs(name: str, section: dict[str, Any]) -> list[JobEntry]:
    jobs = section.get("jobs") or []
    if not isinstance(jobs, list):
        raise ScheduleFileError(f"{name}.jobs: expected a list of jobs, got {_kind(jobs)}")
    entries: dict[str, JobEntry] = {}
    for index, raw in enumerate(jobs):
        entry = _entry(f"{name}.jobs[{index}]", raw)
        if entry.key in entries:
            raise ScheduleFileError(
                f"{entry.label}: duplicate key, already used by {entries[entry.key].location}"
            )
        entries[entry.key] = entry
    return list(entries.values())


def _entry(location: str, raw: Any) -> JobEntry:
    if not isinstance(raw, dict):
        raise ScheduleFileError(f"{location}: expected a mapping of fields, got {_kind(raw)}")
    key = raw.get("key")
    if not isinstance(key, str) or not key.strip():
        raise ScheduleFileError(
            f"{location}: key: required, a non-empty string naming the schedule, "
            "e.g. 'reports:daily'"
        )
    entry = JobEntry(location, dict(raw))
    _check_known_fields(entry)
    return entry


def _check_known_fields(entry: JobEntry) -> None:
    for name in entry.fields:
        if name not in ENTRY_FIELDS:
            close = difflib.get_close_matches(str(name), ENTRY_FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ScheduleFileError(
                f"{entry.label}: unknown field {name!r}{hint}; fields are {', '.join(ENTRY_FIELDS)}"
            )


def _merge_entry(base: JobEntry, override: JobEntry) -> JobEntry:
    return JobEntry(override.location, _deep_merge(base.fields, override.fields))


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key, recursively; anything else in ``override`` replaces."""
    merged = dict(base)
    for name, value in override.items():
        current = merged.get(name)
        if isinstance(current, dict) and isinstance(value, dict):
            value = _deep_merge(current, value)
        merged[name] = value
    return merged


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


# --- validating an entry ---------------------------------------------------------------------


def _build(
    entry: JobEntry, allowed_job_prefixes: tuple[str, ...], now: datetime | None
) -> ScheduleSpec:
    """The entry as a validated, unsaved Schedule; ScheduleFileError names entry and field."""
    try:
        schedule = Schedule(**_attributes(entry.fields))
        _check_placeholders(entry)
        schedule.validate(now)
        check_job_allowed(schedule.job_class, allowed_job_prefixes)
    except ScheduleValidationError as exc:
        raise ScheduleFileError(f"{entry.label}: {exc}") from None
    return ScheduleSpec(entry.location, schedule)


def _check_placeholders(entry: JobEntry) -> None:
    for name in ("args", "kwargs"):
        for path, text in _unknown_placeholders(entry.fields.get(name), name):
            known = ", ".join("{{" + p + "}}" for p in PLACEHOLDERS)
            raise ScheduleFileError(
                f"{entry.label}: {path}: unknown placeholder {text}; use one of {known}"
            )


def _attributes(fields: dict[str, Any]) -> dict[str, Any]:
    """Schedule keyword arguments of an entry; omitted fields take the Schedule defaults."""
    attributes = {name: fields[name] for name in SCHEDULE_FIELDS if name in fields}
    attributes["name"] = fields["key"]
    attributes["job_class"] = fields.get("job_class")
    for flag in ("enabled", "catch_up"):
        if flag in attributes:
            attributes[flag] = _flag(flag, attributes[flag])
    if "description" in attributes:
        attributes["description"] = _description(attributes["description"])
    for instant in ("starts_at", "ends_at"):
        if attributes.get(instant) is not None:
            attributes[instant] = _instant_field(instant, attributes[instant])
    if attributes.get("anchor") is not None:
        attributes["anchor"] = _anchor(attributes["anchor"])
    elif "interval" in fields or "interval_unit" in fields:
        attributes["anchor"] = _default_anchor(fields.get("timezone", "UTC"))
    return attributes


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ScheduleValidationError(name, f"must be true or false, got {value!r}")
    return value


def _description(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ScheduleValidationError("description", f"must be text, got {_kind(value)}")
    return value


def _anchor(value: Any) -> datetime:
    """An ISO-8601 instant with a UTC offset (YAML may already have parsed it)."""
    return _instant_field("anchor", value)


def _instant_field(name: str, value: Any) -> datetime:
    """The instant field ``name`` (``anchor``, ``starts_at``, ``ends_at``): ISO-8601 with a
    UTC offset (YAML may already have parsed it)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ScheduleValidationError(
                name, f"{value!r} is not ISO-8601, e.g. '2025-01-31T10:00:00+01:00'"
            ) from None
    if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
        raise ScheduleValidationError(
            name, f"{value.isoformat()} has no UTC offset; add one, e.g. +00:00"
        )
    if not isinstance(value, datetime):
        shown = value.isoformat() if isinstance(value, date) else repr(value)
        raise ScheduleValidationError(
            name, f"{shown} is not a date and time with an offset, e.g. 2025-01-31T10:00:00Z"
        )
    return value


def _default_anchor(timezone: Any) -> datetime:
    """Midnight of 1970-01-01 in the schedule's timezone: intervals align to round times."""
    zone = timegrid.validate_timezone(timezone)
    return datetime(1970, 1, 1, tzinfo=zone)


# --- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueMove:
    """How a schedule's queued execution moves: ``old_run_at`` -> ``new_run_at`` (None: none)."""

    old_run_at: datetime | None
    new_run_at: datetime | None


@dataclass(frozen=True)
class ScheduleChange:
    """One change sync makes: ``action`` on schedule ``name``.

    ``fields`` maps each changed attribute to ``(old, new)`` (for ``update``);
    ``move`` says how its queued execution moves, when it does.
    """

    action: Action
    name: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    move: QueueMove | None = None


@dataclass(frozen=True)
class SyncPlan:
    """What :func:`sync` did (or, with ``dry_run``, would do).

    ``label`` is the owner the sync acted for; ``left_alone`` names the schedules it did not
    touch because they belong to code (no label) or to another schedule file.
    """

    path: str
    env: str
    dry_run: bool
    changes: tuple[ScheduleChange, ...]
    unchanged: tuple[str, ...]
    label: str = ""
    left_alone: tuple[str, ...] = ()

    def of(self, action: Action | str) -> list[ScheduleChange]:
        """The changes with ``action``."""
        return [change for change in self.changes if change.action == action]

    def describe(self) -> str:
        """A summary line, then one line per change, for the operator."""
        counts = ", ".join(
            f"{len(self.of(action))} {'to ' + verb if self.dry_run else done}"
            for action, verb, done in _VERBS
        )
        header = (
            f"{self.path} (env {self.env}, label {self.label}): {counts}, "
            f"{len(self.unchanged)} unchanged, {len(self.left_alone)} not ours (left alone)"
        )
        if self.dry_run:
            header += " [dry run: nothing written]"
        return "\n".join([header, *(_describe_change(change) for change in self.changes)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (instants as ISO-8601)."""
        return {
            "path": self.path,
            "env": self.env,
            "label": self.label,
            "dry_run": self.dry_run,
            "changes": [_change_dict(change) for change in self.changes],
            "unchanged": list(self.unchanged),
            "left_alone": list(self.left_alone),
        }


def _describe_change(change: ScheduleChange) -> str:
    parts = [
        f"{name}: {_shown(old)} -> {_shown(new)}" for name, (old, new) in change.fields.items()
    ]
    if change.move is not None:
        parts.append(
            f"queued {_instant(change.move.old_run_at)} -> {_instant(change.move.new_run_at)}"
        )
    return f"  {change.action:<8} {change.name}" + (f"  {'; '.join(parts)}" if parts else "")


def _change_dict(change: ScheduleChange) -> dict[str, Any]:
    move = change.move
    return {
        "action": change.action,
        "name": change.name,
        "fields": {
            name: {"old": _plain(old), "new": _plain(new)}
            for name, (old, new) in change.fields.items()
        },
        "queued": None
        if move is None
        else {"old": _plain(move.old_run_at), "new": _plain(move.new_run_at)},
    }


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _shown(value: Any) -> str:
    return json.dumps(_plain(value), ensure_ascii=False)


def _instant(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "none"


# --- sync ------------------------------------------------------------------------------------


def default_label(path: str | Path) -> str:
    """The owner label of a schedule file: its name without the extension
    (``deploy/schedules.yml`` -> ``schedules``)."""
    return Path(path).stem


def sync(
    pb: Postburner,
    path: str | Path,
    *,
    env: str,
    prune: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
    label: str | None = None,
    adopt: bool = False,
) -> SyncPlan:
    """Make the database's schedules of ``label`` (default: the file name without its
    extension) match the file at ``path`` (section ``env``).

    Only schedules owned by ``label`` are touched: it creates schedules (owned by
    ``label``) and updates its own by name, assigning only the fields that differ; it
    disables its schedules the file no longer mentions, or deletes them when ``prune``.
    Schedules created from code (no label) or by another file are never touched and are
    listed in :attr:`SyncPlan.left_alone`; a file entry naming one of them is refused
    (:class:`ScheduleFileError`), except that with ``adopt`` an entry takes over a schedule
    created from code (e.g. by a sync before labels existed). A pause is the operator's:
    sync never pauses or resumes a schedule.

    Everything is validated first and written in one transaction; the after-commit hooks
    then queue or remove the affected executions. With ``dry_run`` nothing is written.
    ``now`` (default ``pb.clock()``) is the instant the predicted queue moves are computed
    from. Raises :class:`ScheduleFileError` when the file is invalid, before anything is
    written.
    """
    now = now or pb.clock()
    label = label if label is not None else default_label(path)
    _check_label(label)
    specs = load_schedule_file(
        path, env=env, allowed_job_prefixes=pb.settings.allowed_job_prefixes, now=now
    )
    with pb.session() if dry_run else pb.work_session() as session:
        existing = {schedule.name: schedule for schedule in pb.store.all_schedules(session)}
        _check_ownership(path, specs, existing, label, adopt=adopt)
        ours = {
            name: s for name, s in existing.items() if s.label == label or name in _names(specs)
        }
        queued = pb.store.queued_run_ats(session, now)
        changes, unchanged = _plan(specs, ours, queued, prune=prune, now=now, label=label)
        if not dry_run:
            _apply(session, changes, specs, ours, label)
            session.commit()
    left_alone = tuple(sorted(set(existing) - set(ours)))
    return SyncPlan(str(path), env, dry_run, tuple(changes), tuple(unchanged), label, left_alone)


def _names(specs: list[ScheduleSpec]) -> set[str]:
    return {spec.name for spec in specs}


def _check_label(label: str) -> None:
    try:
        Schedule(label=label)
    except ScheduleValidationError as exc:
        raise ScheduleFileError(f"--label: {exc}") from None


def _check_ownership(
    path: str | Path,
    specs: list[ScheduleSpec],
    existing: dict[str, Schedule],
    label: str,
    *,
    adopt: bool,
) -> None:
    """Refuse an entry naming a schedule that another owner holds (code: unless ``adopt``)."""
    for spec in specs:
        current = existing.get(spec.name)
        if current is None or current.label == label or (adopt and current.label is None):
            continue
        owner = "code" if current.label is None else f"schedule file label {current.label!r}"
        fix = (
            "pass --adopt to take it over, rename the entry, or delete the schedule"
            if current.label is None
            else f"sync it with --label {current.label}, rename the entry, or delete it"
        )
        raise ScheduleFileError(
            f"{path}: {spec.location} (key {spec.name!r}): the schedule exists, owned by "
            f"{owner}, not by label {label!r}; {fix}"
        )


def _plan(
    specs: list[ScheduleSpec],
    existing: dict[str, Schedule],
    queued: dict[int, datetime],
    *,
    prune: bool,
    now: datetime,
    label: str,
) -> tuple[list[ScheduleChange], list[str]]:
    changes: list[ScheduleChange] = []
    unchanged: list[str] = []
    declared = {spec.name for spec in specs}
    proposals = [
        (spec.name, _change_for(spec.schedule, existing.get(spec.name), queued, now, label))
        for spec in specs
    ] + [
        (name, _retirement(existing[name], queued, prune=prune))
        for name in sorted(set(existing) - declared)
    ]
    for name, change in proposals:
        if change is None:
            unchanged.append(name)
        else:
            changes.append(change)
    return changes, unchanged


def _change_for(
    wanted: Schedule,
    current: Schedule | None,
    queued: dict[int, datetime],
    now: datetime,
    label: str,
) -> ScheduleChange | None:
    runs = wanted.enabled and (current is None or not current.is_paused)
    if current is None:
        upcoming = wanted.next_run_at(now) if runs else None
        move = QueueMove(None, upcoming) if upcoming is not None else None
        return ScheduleChange(SyncAction.CREATE, wanted.name, move=move)
    differing = {
        name: (getattr(current, name), getattr(wanted, name))
        for name in SCHEDULE_FIELDS
        if _comparable(getattr(current, name)) != _comparable(getattr(wanted, name))
    }
    if current.label != label:
        differing["label"] = (current.label, label)  # adopted (see sync's ``adopt``)
    if not differing:
        return None
    move = None
    if _REQUEUE_FIELDS & set(differing):
        move = QueueMove(queued.get(current.id), wanted.next_run_at(now) if runs else None)
    if move is not None and move.old_run_at is None and move.new_run_at is None:
        move = None
    return ScheduleChange(SyncAction.UPDATE, wanted.name, differing, move)


def _retirement(
    current: Schedule, queued: dict[int, datetime], *, prune: bool
) -> ScheduleChange | None:
    old = queued.get(current.id)
    move = QueueMove(old, None) if old is not None else None
    if prune:
        return ScheduleChange(SyncAction.DELETE, current.name, move=move)
    if not current.enabled:
        return None
    return ScheduleChange(SyncAction.DISABLE, current.name, {"enabled": (True, False)}, move)


def _comparable(value: Any) -> str:
    """Strict equality for stored values (``True`` differs from ``1``, instants by instant)."""
    return json.dumps(value, sort_keys=True, default=_json_instant)


def _json_instant(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not comparable")


def _apply(
    session: Session,
    changes: list[ScheduleChange],
    specs: list[ScheduleSpec],
    existing: dict[str, Schedule],
    label: str,
) -> None:
    wanted = {spec.name: spec.schedule for spec in specs}
    for change in changes:
        if change.action == SyncAction.CREATE:
            wanted[change.name].label = label
            session.add(wanted[change.name])
        elif change.action == SyncAction.DELETE:
            session.delete(existing[change.name])
        else:
            for name, (_old, new) in change.fields.items():
                setattr(existing[change.name], name, new)
