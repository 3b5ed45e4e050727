"""Read a backup tree as sesam's path backup does: walk it without following symbolic links,
lstat every entry, read every regular file to its end; never open anything else (a FIFO
would block, a device node is not data). Errors are collected, not fatal: a corrupt guest
filesystem answers some reads with EIO or EUCLEAN.

Usage: read_tree.py ROOT. Prints JSON: files, directories, bytes, errors (up to 50), and the
content of every file named "marker" (path relative to ROOT -> text).
"""

import json
import os
import stat
import sys

root = sys.argv[1]
found = {"files": 0, "directories": 0, "other": 0, "bytes": 0, "errors": [], "markers": {}}


def error(exc):
    found["errors"].append(f"{exc.filename!r}: {exc.strerror}" if isinstance(exc, OSError) else str(exc))


def read(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        data = []
        while chunk := os.read(fd, 1 << 20):
            found["bytes"] += len(chunk)
            if len(data) < 1:
                data.append(chunk)
        return b"".join(data)
    finally:
        os.close(fd)


for directory, subdirs, files in os.walk(root, onerror=error):
    found["directories"] += 1
    for name in files + [d for d in subdirs if os.path.islink(os.path.join(directory, d))]:
        path = os.path.join(directory, name)
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                found["other"] += 1
                continue
            found["files"] += 1
            content = read(path)
            if name == "marker":
                found["markers"][os.path.relpath(path, root)] = content.decode(errors="replace").strip()
        except OSError as exc:
            error(exc)
found["error_count"] = len(found["errors"])
found["errors"] = found["errors"][:50]
print(json.dumps(found))
