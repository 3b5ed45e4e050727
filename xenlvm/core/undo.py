"""Undo registered as you go: each change pushes its inverse just BEFORE it runs, and the
inverse checks what really happened (a command that failed or timed out after doing its work
is still undone; one that did nothing leaves its inverse nothing to do).

On failure, ``unwind`` runs the inverses in reverse order. Every inverse runs even when an
earlier one failed; their failures are logged and returned so the caller can report them
beside the original error, never instead of it. ``taken_down`` is the same stack for what a
step sets up only for itself, undone when the step ends, successful or not.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from xenlvm.errors import CleanupFailed

log = logging.getLogger("xenlvm")


class UndoStack:
    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, description: str, undo: Callable[[], object]) -> None:
        self._steps.append((description, undo))

    def __len__(self) -> int:
        return len(self._steps)

    def adopt(self, other: UndoStack) -> None:
        """Take over other's steps, on top of this stack's, in their order; other is left empty."""
        self._steps += other._steps
        other._steps = []

    def discard(self) -> None:
        """Forget every undo step: what was done stays done (the success path)."""
        self._steps.clear()

    def unwind(self, level: int = logging.WARNING) -> list[str]:
        """Undo every step in reverse, each logged at level; return a description of each step
        that failed."""
        failures = []
        while self._steps:
            description, undo = self._steps.pop()
            log.log(level, "undo: %s", description)
            try:
                undo()
            except Exception as exc:  # every step must get its chance; report all failures
                log.error("undo failed: %s: %s", description, exc)
                failures.append(f"{description}: {exc}")
        return failures


@contextlib.contextmanager
def taken_down() -> Iterator[UndoStack]:
    """An UndoStack for what a step sets up only for itself (a loop device, a private mount):
    every step is undone, in reverse, when the with-block ends, successful or not. A failure to
    undo raises CleanupFailed, which carries the block's own error when there is one."""
    undo = UndoStack()
    try:
        yield undo
    except BaseException as exc:
        failed = undo.unwind(logging.INFO)
        if failed:
            raise CleanupFailed(f"{exc}; cleaning up ALSO failed: {'; '.join(failed)}", exc) from exc
        raise
    failed = undo.unwind(logging.INFO)
    if failed:
        raise CleanupFailed(f"cleaning up failed: {'; '.join(failed)}")
