"""One interface over every PACS transport.

:class:`PacsClient` is what :class:`~viewer.pacs.dimse.DimseClient` (C-GET or C-MOVE) and
:class:`~viewer.pacs.dicomweb.DicomWebClient` (QIDO-RS / WADO-RS) both provide; :func:`open_client` picks one
for a node.  Retrieving a study is the engine's job (:mod:`viewer.pacs.retrieve`), which uses these.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

from viewer.errors import PacsError
from viewer.imports import need
from viewer.pacs.dimse import DEFAULT_ASSOCIATIONS, DimseClient
from viewer.pacs.node import (
    DEFAULT_STORAGE_PORT,
    Node,
    Progress,
    RetrieveResult,
    Sink,
)

log = logging.getLogger(__name__)

Via = Literal["get", "move", "wado"]
VIAS: tuple[str, ...] = ("get", "move", "wado")


@runtime_checkable
class PacsClient(Protocol):
    """What every transport offers (the conformance tests in tests/pacs run each through the same class)."""

    def echo(self) -> float:
        """Check the node answers; return the round trip in seconds."""
        ...

    def find(
        self,
        level: str,
        keys: Mapping[str, str] | None = None,
        *,
        cancel: threading.Event | None = None,
        limit: int = ...,
    ) -> list[dict[str, str]]:
        """Query at level "patient" (DIMSE only), "study", "series" or "image"; ``{keyword: text}`` per match."""
        ...

    def retrieve(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uids: Sequence[str] | None = None,
        *,
        sink: Sink,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        sop_class_uids: Collection[str] | None = None,
    ) -> RetrieveResult:
        """Fetch a study, a series or listed instances of one series into `sink` (Part 10 bytes each)."""
        ...

    def close(self) -> None:
        """Release what the client holds (an HTTP session); it must not be used afterwards."""
        ...


def open_client(
    node: Node,
    via: str = "get",
    *,
    move_port: int | None = None,
    associations: int | None = None,
    move_peers: Sequence[Node] = (),
) -> PacsClient:
    """The transport for `node`: ``"get"`` (C-GET), ``"move"`` (C-MOVE to our AE title, our Storage SCP on
    `move_port`, admitting only `node` and `move_peers`) or ``"wado"`` (DICOMweb at ``node.dicomweb_url``)."""
    if via == "wado":
        if not node.dicomweb_url:
            raise PacsError(f"No DICOMweb URL is configured for the node '{node.name}'.")
        need("requests", "pydicom")  # dicomweb imports both
        from viewer.pacs.dicomweb import DicomWebClient  # here: requests costs ~0.1 s to import

        return DicomWebClient(node.dicomweb_url, node.timeouts, node=node)
    if via in ("get", "move"):
        return DimseClient(node, via=via, storage_port=move_port or DEFAULT_STORAGE_PORT,
                           associations=associations or DEFAULT_ASSOCIATIONS, move_peers=move_peers)
    raise PacsError(f"'{via}' is not a retrieval method; use one of {', '.join(VIAS)}.")
