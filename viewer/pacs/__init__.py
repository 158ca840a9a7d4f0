"""The PACS client layer (no Qt): DIMSE and DICOMweb transports, and the one retrieval engine over them.

    retrieve.retrieve(profile, study_uid, library=...) the only way a study is fetched
    ClusterProfile.of_node(node, via)                  a single node is a cluster of one
    open_client(node, via="get"|"move"|"wado")         a transport: echo(), find(level, keys), retrieve(...)
    parse_node("AET@HOST:PORT")                        a Node; settings hold saved ones

Errors are viewer.errors types (PacsError and its subclasses, OperationCancelled, StorageFullError), each with
a one-line message for the user.  Real peers for tests and demos (an Orthanc process, the namespace cluster)
live beside the viewer, in packaging/lab.

Names are loaded on first use, so that importing one light module of this package (``mifas-pacs --version``)
does not load pydicom and pynetdicom.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClusterProfile": "viewer.pacs.cluster",
    "DEFAULT_CALLING_AE": "viewer.pacs.node",
    "DEFAULT_STORAGE_PORT": "viewer.pacs.node",
    "DicomWebClient": "viewer.pacs.dicomweb",
    "DimseClient": "viewer.pacs.dimse",
    "DimseStatus": "viewer.pacs.status",
    "InstanceSink": "viewer.pacs.sink",
    "MultipartReader": "viewer.pacs.multipart",
    "Node": "viewer.pacs.node",
    "PacsClient": "viewer.pacs.client",
    "RetrievalResult": "viewer.pacs.retrieve",
    "RetrieveResult": "viewer.pacs.node",
    "StorageScp": "viewer.pacs.storage_scp",
    "Timeouts": "viewer.pacs.node",
    "first_middle_last": "viewer.pacs.retrieve",
    "keep_patient_data_out_of_logs": "viewer.pacs.dimse",
    "node_from_json": "viewer.pacs.node",
    "node_to_json": "viewer.pacs.node",
    "open_client": "viewer.pacs.client",
    "parse_node": "viewer.pacs.node",
    "validate_ae_title": "viewer.pacs.node",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'viewer.pacs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
