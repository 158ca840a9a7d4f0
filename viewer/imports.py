"""Heavy libraries imported where they are first needed, once, by one thread at a time (no Qt).

pydicom, pynetdicom and requests cost about 0.4 s to import together, and a command-line retrieval on the lean
transports needs none of them, so the modules that do import them inside the functions that use them.  Those
functions run on the retrieval's threads (the writer's header fallback, a C-FIND fallback, the health probes),
and two threads importing pydicom at once see its modules half initialised (its package imports its own
submodules circularly: "cannot import name 'UID' from partially initialized module").  So every such import goes
through :func:`need`, which imports the whole package under one lock before the caller's ``import`` statement
finds it ready.
"""

from __future__ import annotations

import importlib
import sys
import threading

_LOCK = threading.RLock()  # re-entrant: importing pynetdicom imports pydicom


def need(*packages: str) -> None:
    """Make sure each top-level package (``"pydicom"``, ``"pynetdicom"``, ``"requests"``) is fully imported."""
    for name in packages:
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        if module is not None and not getattr(spec, "_initializing", False):
            continue
        with _LOCK:
            importlib.import_module(name)
