"""Running a long command-line task so that Ctrl-C cancels it cleanly (no Qt, no third-party imports).

The task runs in a worker thread and is handed a :class:`threading.Event`; the main thread waits for it and, on
KeyboardInterrupt, sets the event and waits for the task to stop at its next check (between two files or two
images), so nothing half-written or half-sent is left behind.  The task's result is returned, its exception
re-raised (``OperationCancelled`` after Ctrl-C).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_cancellable(task: Callable[[threading.Event], T], name: str) -> T:
    """``task(cancel)`` in a worker thread named `name`; Ctrl-C sets `cancel` (see the module docstring)."""
    cancel = threading.Event()
    done = threading.Event()  # waited on rather than Thread.join: a join interrupted by Ctrl-C can return early
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["result"] = task(cancel)
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        cancel.set()
        done.wait()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]
