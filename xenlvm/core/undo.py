"""Undo registered as you go: each change pushes its inverse the moment it has succeeded.

On failure, ``unwind`` runs the inverses in reverse order. Every inverse runs even when an
earlier one failed; their failures are logged and returned so the caller can report them
beside the original error, never instead of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

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

    def unwind(self) -> list[str]:
        """Undo every step in reverse; return a description of each step that failed."""
        failures = []
        while self._steps:
            description, undo = self._steps.pop()
            log.warning("undo: %s", description)
            try:
                undo()
            except Exception as exc:  # every step must get its chance; report all failures
                log.error("undo failed: %s: %s", description, exc)
                failures.append(f"{description}: {exc}")
        return failures
