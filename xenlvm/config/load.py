"""Read the configuration file once, validate all of it, return xenlvm.config.model's frozen dataclasses.

Nothing else in xenlvm looks at raw YAML. Every mistake is reported with the file, the line
YAML gives for it, the key and what is wrong, before any command runs. Which keys exist, and
how each is read, is declared on the dataclasses' fields (xenlvm.config.model.key).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import yaml

from xenlvm.config.choices import contradicting_choices, nested
from xenlvm.config.model import (
    Config,
    Job,
    QuiesceSettings,
    Settings,
    SnapshotSpec,
    ThinPoolSettings,
    VmDiskSettings,
    Volume,
    WatchdogSettings,
    XenSettings,
    keys,
)
from xenlvm.config.values import JOB_NAME, volume_name
from xenlvm.errors import ConfigError

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import Any, Union

# libyaml's parser where PyYAML has it (several times faster), else the pure-Python one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ---------------------------------------------------------------------------------------------
# The walk over YAML nodes. Working on nodes (not on yaml.safe_load's dicts) keeps line numbers.


class Fields(dict):
    """Parsed values by key, with the YAML node each came from (for errors found later)."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, yaml.Node] = {}


class Reader:
    def __init__(self, path: str) -> None:
        self.path = path
        self._constructor = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node | None, key: str, message: str) -> ConfigError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        key = key.lstrip(".")
        where = f" {key}:" if key else ""
        return ConfigError(f"{self.path}{line}:{where} {message}")

    def mapping(self, node: yaml.Node, key: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, "must be a mapping of keys to values")
        items: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(name, str) or not name:
                raise self.error(key_node, key, "keys must be plain names")
            if name in items:
                raise self.error(key_node, f"{key}.{name}".lstrip("."), "is given twice")
            items[name] = (key_node, value_node)
        return items

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def fields(self, node: yaml.Node, key: str, parsers: dict[str, Parser],
               required: tuple[str, ...] = (), not_empty: tuple[str, ...] = ()) -> Fields:
        """Given a mapping node and a parser per allowed key, return the parsed values (with the
        node of each, for later errors). Keys in required must be there; keys in required or
        not_empty must not be empty."""
        items = self.mapping(node, key)
        for name, (key_node, _) in items.items():
            if name not in parsers:
                allowed = ", ".join(sorted(parsers))
                raise self.error(key_node, f"{key}.{name}", f"unknown key (allowed here: {allowed})")
        for name in required:
            if name not in items:
                raise self.error(node, key, f"the key {name!r} is required")
        parsed = Fields()
        for name, (_, value_node) in items.items():
            parsed.nodes[name] = value_node
            parser = parsers[name]
            if isinstance(parser, Section):
                empty = isinstance(value_node, yaml.ScalarNode) and value_node.tag.endswith(":null")
                if empty and name in (*required, *not_empty):
                    raise self.error(value_node, f"{key}.{name}", "must not be empty")
                parsed[name] = None if empty else parser.parse(self, value_node, f"{key}.{name}".lstrip("."))
                continue
            try:
                raw = self.value(value_node)
            except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError) as exc:
                raise self.error(value_node, f"{key}.{name}", f"cannot read this value: {exc}") from None
            if raw is None:
                if name in (*required, *not_empty):
                    raise self.error(value_node, f"{key}.{name}", "must not be empty")
                parsed[name] = None
                continue
            try:
                parsed[name] = parser(raw)
            except (ValueError, TypeError, OverflowError) as exc:
                raise self.error(value_node, f"{key}.{name}", str(exc)) from None
        return parsed


class Section:
    """A parser for a nested mapping, so that its keys get their own line numbers."""

    def __init__(self, parse: Callable[[Reader, yaml.Node, str], Any]) -> None:
        self.parse = parse

if TYPE_CHECKING:
    Parser = Union[Callable[[Any], Any], Section]


# ---------------------------------------------------------------------------------------------
# The sections, as their dataclasses declare them


def _section(section: type) -> Section:
    return Section(functools.partial(_read_section, section))


def _parsers(section: type) -> dict[str, Parser]:
    """Given a section's dataclass, return a parser per key; a nested section reads its own node."""
    parsers: dict[str, Parser] = {}
    for name, spec in keys(section).items():
        parse = spec.metadata["parse"]
        if spec.metadata["many"]:
            parsers[name] = Section(_volumes_section)
        elif isinstance(parse, type) and dataclasses.is_dataclass(parse):
            parsers[name] = _section(parse)
        else:
            parsers[name] = parse
    return parsers


def _required(section: type) -> tuple[str, ...]:
    return tuple(name for name, spec in keys(section).items()
                 if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING)


def _read_section(section: type, reader: Reader, node: yaml.Node, key: str) -> Any:
    """A mapping of the section's keys into its dataclass: a key left out, or null, keeps the
    default, unless null disables it."""
    fields = keys(section)
    values = reader.fields(node, key, _parsers(section), required=_required(section))
    made = section(**{fields[k].name: v for k, v in values.items()
                      if v is not None or fields[k].metadata["null_disables"]})
    problem = made.problem() if hasattr(made, "problem") else None
    if problem:
        raise reader.error(node, key, problem)
    return made


def _job_parsers() -> dict[str, Parser]:
    """A job's keys: its own, and those of a single volume (volume, snapshot, size) beside them."""
    return {**_parsers(SnapshotSpec), **_parsers(Job)}


def _volume_item_parsers() -> dict[str, Parser]:
    """The keys of an item of a job's volumes: list: a volume's, and the name of its directory."""
    return {**_parsers(SnapshotSpec), "name": volume_name}


def sections() -> dict[str, dict[str, Any]]:
    """Every section of the file ('' the top), with its keys (and their parsers), in order."""
    return {
        "": {"settings": None, "jobs": None},
        "settings": _parsers(Settings),
        "jobs.NAME": _job_parsers(),
        "jobs.NAME.volumes[]": _volume_item_parsers(),
        "jobs.NAME.xen": _parsers(XenSettings),
        "jobs.NAME.xen.quiesce": _parsers(QuiesceSettings),
        "jobs.NAME.vmdisks": _parsers(VmDiskSettings),
        "jobs.NAME.watchdog": _parsers(WatchdogSettings),
        "jobs.NAME.thin_pool": _parsers(ThinPoolSettings),
    }


def _volumes_section(reader: Reader, node: yaml.Node,
                     key: str) -> tuple[tuple[dict[str, Any], yaml.Node], ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise reader.error(node, key, "must be a list of volumes, each with volume: and snapshot: "
                           "(and size: unless the volume is thin)")
    parsers = _volume_item_parsers()
    return tuple((reader.fields(item, f"{key}[{i}]", parsers, required=("volume", "snapshot"),
                                not_empty=tuple(parsers)), item)
                 for i, item in enumerate(node.value))


def parse_config(text: str, path: str = "<config>") -> Config:
    """Given the text of a configuration file, return the validated Config or raise ConfigError."""
    reader = Reader(path)
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{line}: YAML syntax error: {problem}") from None
    if root is None:
        raise ConfigError(f"{path}: the file is empty; it needs at least a 'jobs:' section "
                          "(see config.example.yaml)")
    top = reader.fields(root, "", {"settings": _section(Settings), "jobs": Section(_jobs_section)},
                        required=("jobs",))
    if top["jobs"] is None:
        raise reader.error(root, "jobs", "must not be empty")
    return Config(path=path, settings=top.get("settings") or Settings(), jobs=top["jobs"])


def _jobs_section(reader: Reader, node: yaml.Node, key: str) -> dict[str, Job]:
    jobs: dict[str, Job] = {}
    job_items = reader.mapping(node, key)
    if not job_items:
        raise reader.error(node, key, "defines no job")
    for name, (key_node, value_node) in job_items.items():
        if not JOB_NAME.fullmatch(name):
            raise reader.error(key_node, f"jobs.{name}", "a job name may contain letters, digits, "
                               "_ . - (not starting with . or -), at most 64 characters")
        values = reader.fields(value_node, f"jobs.{name}", _job_parsers(), required=("mountpoint",),
                               not_empty=("volume", "snapshot", "volumes"))
        volumes = _job_volumes(reader, value_node, f"jobs.{name}", values)
        own = {k: v for k, v in values.items() if k not in (*keys(SnapshotSpec), "volumes") and v is not None}
        job = Job(name=name, volumes=volumes, **own)
        contradiction = contradicting_choices(job)
        if contradiction is not None:
            section, below, message = contradiction
            raise reader.error(values.nodes[section], f"jobs.{name}.{below}", message)
        jobs[name] = job
    _check_jobs_apart(reader, node, list(jobs.values()))
    return jobs


def _job_volumes(reader: Reader, node: yaml.Node, key: str, values: Fields) -> tuple[SnapshotSpec, ...]:
    """The job's volumes: either volume/snapshot/size on the job itself, or a volumes: list."""
    single = [k for k in keys(SnapshotSpec) if k in values]
    # Each spec with the key and node that named its snapshot, for errors.
    specs: list[tuple[SnapshotSpec, str, yaml.Node]] = []
    if values.get("volumes") is not None:
        if single:
            raise reader.error(values.nodes[single[0]], f"{key}.{single[0]}", "give either "
                               "volume/snapshot/size or a 'volumes:' list, not both")
        names: set[str] = set()
        for i, (item, item_node) in enumerate(values["volumes"]):
            origin = item["volume"]
            name = item.get("name") or origin.lv
            if name in names:
                raise reader.error(item.nodes.get("name", item_node), f"{key}.volumes[{i}].name",
                                   f"{name!r} is used twice in this job (each volume is mounted at "
                                   "<mountpoint>/<name>)")
            names.add(name)
            specs.append((SnapshotSpec(origin, item["snapshot"], f"{values['mountpoint']}/{name}",
                                       item.get("size")),
                          f"{key}.volumes[{i}].snapshot", item.nodes["snapshot"]))
    elif values.get("vmdisks") is not None:
        if single:
            raise reader.error(values.nodes[single[0]], f"{key}.{single[0]}", "a job with 'vmdisks:' "
                               "exposes them below its mountpoint: give its volumes as a 'volumes:' "
                               "list (each is mounted at <mountpoint>/<name>)")
    else:
        for required in ("volume", "snapshot"):
            if required not in values:
                raise reader.error(node, key, f"the key {required!r} (or a 'volumes:' list, or "
                                   "'vmdisks:') is required")
        specs.append((SnapshotSpec(values["volume"], values["snapshot"], values["mountpoint"],
                                   values.get("size")), f"{key}.snapshot", values.nodes["snapshot"]))
    origins = {spec.origin for spec, _, _ in specs}
    seen: set[Volume] = set()
    for spec, where, snapshot_node in specs:
        if spec.snapshot_volume in origins:
            raise reader.error(snapshot_node, where, f"must differ from the name of the volume "
                               f"{spec.snapshot_volume} that the job backs up")
        if spec.snapshot_volume in seen:
            raise reader.error(snapshot_node, where, f"{spec.snapshot_volume} is used twice in this job")
        seen.add(spec.snapshot_volume)
    return tuple(spec for spec, _, _ in specs)


def _check_jobs_apart(reader: Reader, node: yaml.Node, jobs: list[Job]) -> None:
    """Two jobs must never share a mountpoint (or nest them) or a snapshot LV."""
    for i, a in enumerate(jobs):
        for b in jobs[i + 1:]:
            pair = f"jobs {a.name!r} and {b.name!r}"
            if a.mountpoint == b.mountpoint:
                raise reader.error(node, "jobs", f"{pair} use the same mountpoint {a.mountpoint}")
            if nested(a.mountpoint, b.mountpoint):
                raise reader.error(node, "jobs", f"{pair} have nested mountpoints "
                                   f"{a.mountpoint} and {b.mountpoint}")
            shared = {v.snapshot_volume for v in a.volumes} & {v.snapshot_volume for v in b.volumes}
            if shared:
                raise reader.error(node, "jobs", f"{pair} use the same snapshot {min(map(str, shared))}")


def permission_problem(path: str, info: os.stat_result, fix_mode: str = "600") -> str | None:
    """Like sshd's StrictModes: a root job must not read (or run) a file that someone else can
    change. fix_mode: the mode the message proposes."""
    if info.st_uid != 0:
        return (f"{path} is owned by uid {info.st_uid}, not root, so that user could make xenlvm run "
                f"what they want as root. Fix: chown root:root {path}")
    if info.st_mode & 0o022:
        return (f"{path} is writable by its group or by everyone (mode {info.st_mode & 0o777:o}), so "
                f"others could make xenlvm run what they want as root. Fix: chmod {fix_mode} {path}")
    return None


def load_config(path: str, *, strict: bool | None = None) -> Config:
    """Read and validate the configuration file at path. When strict (default: when running as
    root), refuse a file that a user other than root could change."""
    strict = os.geteuid() == 0 if strict is None else strict
    try:
        with open(path, encoding="utf-8") as handle:
            if strict:
                problem = permission_problem(path, os.fstat(handle.fileno()))
                if problem:
                    raise ConfigError(problem)
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found; copy config.example.yaml there "
                          "and adapt it, or pass --config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from None
    return parse_config(text, path)
