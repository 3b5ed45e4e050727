"""The Xen configuration of a job's domains, exported by pre beside the backup: each domain's
live record (`xl list -l`) and copies of its config files from /etc/xen, so that a restore
can rebuild the domain as it was."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence

from xenlvm.config.model import AUTO, Job
from xenlvm.config.values import domain_name
from xenlvm.errors import FileError, SafetyRefusal
from xenlvm.host.fsutil import trust_problem, write_atomically
from xenlvm.xen.domains import Domain

log = logging.getLogger("xenlvm")

_CONFIG_NAME = re.compile(r"""^\s*name\s*=\s*["']([^"']+)["']""", re.MULTILINE)
_MAX_CONFIG_FILE = 1 << 20


def export_directory(job: Job, state_dir: str) -> str | None:
    """Where pre exports the job's domain configuration, or None when it does not."""
    if job.xen is None or job.xen.export_dir is None:
        return None
    if job.xen.export_dir is AUTO:
        return os.path.join(state_dir, job.name, "xen-config")
    return job.xen.export_dir


def export_configuration(job: Job, domains: Sequence[Domain], directory: str, config_dir: str) -> None:
    """Write each domain's live configuration (xl list -l) and copies of its config files from
    /etc/xen into directory, for the admin to include in the backup."""
    copied = []
    domains = _plain_names(domains)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        problem = trust_problem(directory)  # root copies files into it: nobody else may plant a link there
        if problem is not None:
            raise SafetyRefusal(f"xen.export_dir of job {job.name!r} ({directory}) must be root's alone: "
                                f"{problem}. Nothing was changed.")
        for domain in domains:
            target = os.path.join(directory, f"{domain.name}.xl-list-l.json")
            write_atomically(target, json.dumps(domain.record, indent=4) + "\n", mode=0o644)
        for path in _config_files(config_dir, {d.name for d in domains}):
            import shutil  # here: with bz2 and lzma, a cost only when there are files to copy

            shutil.copy2(path, os.path.join(directory, os.path.basename(path)))
            copied.append(os.path.basename(path))
    except OSError as exc:
        raise FileError("export the Xen configuration to", exc,
                        f"Check that xen.export_dir of job {job.name!r} ({directory}) is writable by root "
                        "and its filesystem not full or read-only.") from None
    log.info("exported the configuration of %s to %s (config files: %s)",
             ", ".join(d.name for d in domains) or "no domain", directory, ", ".join(copied) or "none found")


def _plain_names(domains: Sequence[Domain]) -> list[Domain]:
    """The domains whose name can be a file name; the others (xl shows what a domain's creator
    named it, `xen.domains: auto` takes it as it is) are reported and not exported."""
    plain = []
    for domain in domains:
        try:
            domain_name(domain.name)  # the configuration's own rule for a domain's name
            plain.append(domain)
        except ValueError as exc:
            log.warning("the configuration of a domain is not exported: %s, so it cannot name a file "
                        "in the export directory; rename the domain", exc)
    return plain


def _config_files(config_dir: str, names: set[str]) -> list[str]:
    """Files directly in config_dir (or its auto/ folder) whose `name = "..."` is one of names."""
    found = []
    for folder in (config_dir, os.path.join(config_dir, "auto")):
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if not entry.is_file(follow_symlinks=False) or entry.stat().st_size > _MAX_CONFIG_FILE:
                continue
            try:
                with open(entry.path, encoding="utf-8", errors="replace") as handle:
                    match = _CONFIG_NAME.search(handle.read())
            except OSError:
                continue
            if match and match.group(1) in names:
                found.append(entry.path)
    return found
