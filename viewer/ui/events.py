"""A tiny observer mechanism for the pure-Python view models (no Qt).

napari-style: a model owns an :class:`EventEmitter` per event kind (``model.changed``); widgets ``connect`` a
callback and get an event object each time the model changes.  Callbacks run synchronously, in the thread that
changed the model (always the GUI thread for the viewer's models).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

E = TypeVar("E")


class EventEmitter(Generic[E]):
    """Calls every connected callback with the emitted event, in connection order."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[E], None]] = []

    def connect(self, callback: Callable[[E], None]) -> Callable[[E], None]:
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable[[E], None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, event: E) -> None:
        for callback in list(self._callbacks):  # a callback may disconnect itself
            callback(event)

    def __len__(self) -> int:
        return len(self._callbacks)
