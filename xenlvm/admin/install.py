"""Installing the sesam hooks, and chaining an admin's own hooks that were there before.

``xenlvm install-hooks`` writes sbc_pre/sbc_post into sesam's directory, bound to the Python
that runs xenlvm (sesam may call hooks with no PATH). A hook that is not xenlvm's is never
lost: it is renamed to sbc_pre.local / sbc_post.local and called by xenlvm's hook:

- pre:  the local hook first; if it fails, xenlvm's pre does not run and its exit status is
        returned (sesam aborts the backup). Then xenlvm's pre.
- post: xenlvm's post first, then the local hook, always (also when xenlvm's configuration
        does not load). The exit status is xenlvm's when it failed, else the local hook's.

``--uninstall`` removes xenlvm's hooks and renames the local ones back: the directory is as
it was before.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from xenlvm.errors import FileError, SafetyRefusal, XenlvmError
from xenlvm.host.fsutil import trust_problem, write_atomically

log = logging.getLogger("xenlvm")

DEFAULT_HOOK_DIR = "/opt/sesam/bin/sesam"
HOOKS = {"pre": "sbc_pre", "post": "sbc_post"}
MARKER = "xenlvm-hook"
LOCAL_SUFFIX = ".local"

# -I: nothing from sesam's environment (PYTHONPATH, ...) or the hook's directory decides what
# runs as root. -S: no site module, whose search for packages a hook would pay for at every
# call (a tenth of its start-up); the hook names where install-hooks found xenlvm and its
# libraries instead, and falls back to site's search should they have moved since.
HOOK_FLAGS = "-IS"  # one word: the kernel passes what follows the interpreter as one argument
_TEMPLATE = '''#!{python} {flags}
"""SEP sesam {phase} hook, written by 'xenlvm install-hooks' ({marker}).

Remove with 'xenlvm install-hooks --uninstall'; see 'xenlvm {phase} --help'.
"""
import sys
{path_line}sys.path += {libraries!r}
try:
    from xenlvm.hook_entry import run_hook
except ImportError:  # moved since install-hooks: look where Python's site module looks
    import site
    site.main()
    from xenlvm.hook_entry import run_hook

run_hook("{phase}", chain={chain!r})
'''


@dataclass(frozen=True)
class HookState:
    path: str
    exists: bool
    ours: bool
    interpreter: str | None
    local: str | None  # the chained local hook, when there is one


def _zipapp() -> str | None:
    """The xenlvm.pyz this code runs from (make dist), or None for an ordinary installation."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return here if os.path.isfile(here) else None


def _library_dirs(archive: str | None) -> list[str]:
    """The directories that hold xenlvm, PyYAML and click (for --help), as this process found them."""
    import click
    import yaml

    import xenlvm

    found: list[str] = []
    for module in (xenlvm, yaml, click):
        directory = os.path.dirname(os.path.dirname(os.path.abspath(module.__file__ or "")))
        if directory not in found and directory != archive:
            found.append(directory)
    return found


def trust_problems(python: str) -> list[str]:
    """Why the paths a hook names cannot be trusted with root's runs: the interpreter, its
    standard library, the directories of xenlvm and its libraries, the .pyz (each with every
    directory above it: xenlvm.host.fsutil.trust_problem). Empty when all can be."""
    archive = _zipapp()
    paths = [python, os.path.dirname(os.__file__), *_library_dirs(archive), *([archive] if archive else [])]
    problems = [trust_problem(path) for path in dict.fromkeys(paths)]
    return [p for p in problems if p is not None]


def hook_text(phase: str, python: str, chain: str | None) -> str:
    archive = _zipapp()
    path_line = f"sys.path.insert(0, {archive!r})\n" if archive else ""
    return _TEMPLATE.format(python=python, flags=HOOK_FLAGS, phase=phase, marker=MARKER, chain=chain,
                            path_line=path_line, libraries=_library_dirs(archive))


def inspect_hook(directory: str, phase: str) -> HookState:
    path = os.path.join(directory, HOOKS[phase])
    local = path + LOCAL_SUFFIX
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except FileNotFoundError:
        return HookState(path, False, False, None, local if os.path.lexists(local) else None)
    except OSError as exc:
        raise XenlvmError(f"cannot read {path}: {exc.strerror}") from None
    first = head.splitlines()[0] if head else ""
    words = first[2:].split() if first.startswith("#!") else []
    interpreter = words[0] if words else None  # without its flags
    return HookState(path, True, MARKER in head, interpreter, local if os.path.lexists(local) else None)


def _write_hook(path: str, text: str) -> None:
    write_atomically(path, text, mode=0o755, tmp=f"{path}.xenlvm-tmp", exact_mode=True)


def _file_error(action: str, exc: OSError) -> FileError:
    root = " (install-hooks must run as root)" if exc.errno in (errno.EACCES, errno.EPERM) else ""
    return FileError(action, exc, f"What was done before it is listed above{root}; fix the cause "
                     "and run the command again.")


def install_hooks(directory: str, python: str = sys.executable) -> list[str]:
    """Write xenlvm's hooks into directory, keeping foreign hooks as .local; return what was done."""
    done: list[str] = []
    try:
        return _install_hooks(directory, python, done)
    except OSError as exc:
        for line in done:
            log.info("%s", line)
        raise _file_error("install the hook file", exc) from None


def _install_hooks(directory: str, python: str, done: list[str]) -> list[str]:
    if not os.path.isdir(directory):
        raise XenlvmError(f"{directory} does not exist: is the SEP sesam client installed? "
                          "(or pass --dir)")
    untrusted = trust_problems(python)
    if untrusted:
        raise SafetyRefusal(f"sesam runs the hooks as root, and they would run code from paths that "
                            f"others can change: {'; '.join(untrusted)}. Nothing was changed.")
    for phase, name in HOOKS.items():
        state = inspect_hook(directory, phase)
        if state.exists and not state.ours:
            if state.local:
                raise SafetyRefusal(f"{state.path} is not xenlvm's and {state.local} already exists; "
                                    "xenlvm will not overwrite either. Merge them by hand, then run "
                                    "install-hooks again.")
            os.rename(state.path, state.path + LOCAL_SUFFIX)
            done.append(f"kept your {name} as {name}{LOCAL_SUFFIX}; xenlvm's {name} calls it")
            state = inspect_hook(directory, phase)
        _write_hook(state.path, hook_text(phase, python, state.local))
        done.append(f"wrote {state.path} (interpreter {python}"
                    f"{', chaining ' + state.local if state.local else ''})")
    return done


def uninstall_hooks(directory: str) -> list[str]:
    """Remove xenlvm's hooks and put back the ones they chained."""
    done: list[str] = []
    try:
        return _uninstall_hooks(directory, done)
    except OSError as exc:
        for line in done:
            log.info("%s", line)
        raise _file_error("remove or restore the hook file", exc) from None


def _uninstall_hooks(directory: str, done: list[str]) -> list[str]:
    for phase, name in HOOKS.items():
        state = inspect_hook(directory, phase)
        if state.exists and not state.ours:
            done.append(f"left {state.path} alone: it is not xenlvm's")
            continue
        if state.exists:
            os.unlink(state.path)
            done.append(f"removed {state.path}")
        if state.local:
            os.rename(state.local, state.path)
            done.append(f"restored your {name} from {name}{LOCAL_SUFFIX}")
    return done


def run_local_hook(path: str, args: Sequence[str]) -> int:
    """Run the admin's own hook with sesam's arguments and environment; return its exit status.
    Its output goes straight to sesam, like before xenlvm was installed."""
    if not os.path.lexists(path):
        log.warning("the chained hook %s is gone; skipping it", path)
        return 0
    log.info("run local hook: %s", path)
    start = time.monotonic()
    try:
        status = subprocess.run([path, *args], check=False).returncode
    except OSError as exc:
        log.error("cannot run the local hook %s: %s", path, exc.strerror)
        return 1
    log.info("local hook %s exited %d after %.3f s", path, status, time.monotonic() - start)
    return status
