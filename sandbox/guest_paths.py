"""What the sandbox guest hides of this machine's filesystem, and what it keeps in view.

The guest's root is this machine's filesystem (hostfs), so guest/init.sh first hides every
place the code under test or LVM may write: tmpfs over HIDDEN, an overlay over OVERLAID (files
the system needs, writes kept in the guest). guest/private-root.sh, for the Debian package's
test, then overlays PRIVATE too. The checkout, its virtual environment, the Python
installation and the guest's work directory, whose mailbox carries every request and answer,
may lie below any of them: a clone in /var/tmp, /srv or /home, a Jenkins workspace in
/var/lib, pyenv under /root. This module decides what the scripts bind back after hiding;
the scripts do it and check it (a work directory that is not this machine's after all stops
them with a message, instead of a guest whose answers never arrive).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

HIDDEN = ("/tmp", "/var/log", "/opt", "/mnt", "/srv", "/var/tmp", "/root", "/home")
OVERLAID = ("/etc", "/var/lib")
PRIVATE = ("/usr", "/var")


def covers(directory: str, path: str) -> bool:
    """Whether path is directory or lies below it (both absolute and normalised)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def bind_back(paths: Iterable[str], hidden: Iterable[str]) -> list[str]:
    """Given the paths the guest must see as this machine's and the directories about to be
    hidden, return the paths to bind back afterwards: those a hidden directory covers, sorted,
    without one that lies inside another one bound back."""
    hidden = tuple(hidden)
    covered = sorted({os.path.normpath(path) for path in paths if any(covers(top, os.path.normpath(path))
                                                                      for top in hidden)})
    return [path for path in covered if not any(other != path and covers(other, path) for other in covered)]


def boot_binds(keep: Iterable[str]) -> list[str]:
    """What init.sh binds back after hiding HIDDEN and OVERLAID: of keep (the checkout, the
    virtual environment, the Python installation, the work directory), what they cover."""
    return bind_back(keep, HIDDEN + OVERLAID)


def private_binds(work: str) -> list[str]:
    """What private-root.sh binds back after overlaying PRIVATE: the work directory, if they
    cover it. The checkout and Python stay readable through the overlays (their lower layer
    is this machine's directory); only the mailbox must be this machine's both ways."""
    return bind_back([work], PRIVATE)
