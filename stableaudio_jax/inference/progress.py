"""Per-step progress callbacks out of the compiled sampling scan, routed to the call that asked for them.

The scan is compiled once and reused by every ``generate()`` call, so a callback cannot be baked into it (each new
callable would recompile). Instead each pipeline owns a :class:`ProgressHooks`: a call registers its callback
under a fresh id, passes the id into the scan as a traced value, and the scan's host callback looks the id up.
Nothing is module-level: two pipelines, or two threads on one pipeline, never see each other's progress.
"""
from __future__ import annotations

import contextlib
import itertools
import threading
from typing import Callable, Iterator


class ProgressHooks:
    def __init__(self):
        self._hooks: dict[int, Callable[[int], None]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def registered(self, callback: Callable[[int], None] | None) -> Iterator[int]:
        """Yields the id to pass into the scan (0: no callback); the callback is dropped on exit."""
        if callback is None:
            yield 0
            return
        with self._lock:
            call_id = next(self._ids) % (2 ** 31 - 1) or 1
            self._hooks[call_id] = callback
        try:
            yield call_id
        finally:
            with self._lock:
                self._hooks.pop(call_id, None)

    def __call__(self, call_id, step) -> None:
        """The scan's host callback: ``(call id, step index)``."""
        with self._lock:
            callback = self._hooks.get(int(call_id))
        if callback is not None:
            callback(int(step))
