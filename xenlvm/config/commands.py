"""The configuration's commands (xen.quiesce: freeze and thaw, for every domain or per domain):
argv lists, each checked as values.py checks a value, and "{domain}" replaced when they run."""

from __future__ import annotations

import os
from dataclasses import dataclass

from xenlvm.config.values import domain_name

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class DomainCommands:
    """One domain's own freeze and thaw commands (xen.quiesce.per_domain)."""

    domain: str
    freeze: tuple[str, ...]
    thaw: tuple[str, ...]


DOMAIN_PLACEHOLDER = "{domain}"


def command(value: Any) -> tuple[str, ...]:
    """Given an argv list whose first item is an absolute path, return it as a tuple. An item
    that is exactly "{domain}" is replaced by the domain's name when it runs; nothing else is."""
    if not isinstance(value, list) or not value:
        raise ValueError('must be a command as a list, e.g. [/usr/local/sbin/guest-freeze, "{domain}"]')
    items = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise ValueError(f"{item!r}: each item of a command must be a string")
        text = str(item)
        if "\0" in text or not text.isprintable():
            raise ValueError(f"{text!r}: control characters are not allowed in a command")
        if DOMAIN_PLACEHOLDER in text and text != DOMAIN_PLACEHOLDER:
            raise ValueError(f"{text!r}: {DOMAIN_PLACEHOLDER} is replaced only as a whole item; give the "
                             f"name as an argument of its own and build {text!r} in the script")
        items.append(text)
    program = items[0]
    if program == DOMAIN_PLACEHOLDER or not program.startswith("/") or os.path.normpath(program) != program:
        raise ValueError(f"{program!r}: the program must be an absolute, normalized path (it runs as root "
                         "with xenlvm's fixed PATH)")
    return tuple(items)


def substitute(argv: tuple[str, ...], domain: str) -> tuple[str, ...]:
    """argv with each item that is exactly "{domain}" replaced by domain (never a shell)."""
    return tuple(domain if item == DOMAIN_PLACEHOLDER else item for item in argv)


def per_domain_commands(value: Any) -> tuple[DomainCommands, ...]:
    """Given {vm1: {freeze: [...], thaw: [...]}, ...}, return DomainCommands in name order."""
    if not isinstance(value, dict) or not value:
        raise ValueError("must map domain names to their commands, e.g. "
                         "{db1: {freeze: [/usr/local/sbin/db-freeze], thaw: [/usr/local/sbin/db-thaw]}}")
    made = []
    for name, commands in value.items():
        domain = domain_name(name)
        if not isinstance(commands, dict) or set(commands) != {"freeze", "thaw"}:
            raise ValueError(f"{domain}: give exactly 'freeze:' and 'thaw:', each a command list")
        try:
            made.append(DomainCommands(domain, command(commands["freeze"]), command(commands["thaw"])))
        except ValueError as exc:
            raise ValueError(f"{domain}: {exc}") from None
    return tuple(sorted(made, key=lambda c: c.domain))
