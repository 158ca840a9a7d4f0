"""The PACS client layer (no Qt): DIMSE (pynetdicom) and DICOMweb (requests) behind one interface.

    open_client(node, via="get"|"move"|"wado") -> PacsClient      echo(), find(level, keys), retrieve(...)
    retrieve_to_library(node, library, study_uid, ...)            the viewer's study retrieval
    parse_node("AET@HOST:PORT")                                     a Node; settings hold saved ones

Errors are viewer.errors types (PacsError and its subclasses, OperationCancelled, StorageFullError), each with
a one-line message for the user.  The real Orthanc that tests and demos run is not part of the
viewer: it lives in the lab package (packaging/lab/).
"""

from viewer.pacs.client import PacsClient, first_middle_last, open_client, retrieve_study, retrieve_to_library
from viewer.pacs.dicomweb import DicomWebClient, MultipartReader
from viewer.pacs.dimse import DimseClient, DimseStatus, StorageScp, keep_patient_data_out_of_logs
from viewer.pacs.node import (
    DEFAULT_CALLING_AE,
    DEFAULT_STORAGE_PORT,
    Node,
    RetrieveResult,
    Timeouts,
    node_from_json,
    node_to_json,
    parse_node,
    validate_ae_title,
)

__all__ = [
    "DEFAULT_CALLING_AE", "DEFAULT_STORAGE_PORT", "DicomWebClient", "DimseClient", "DimseStatus", "MultipartReader",
    "Node", "PacsClient", "RetrieveResult", "StorageScp", "Timeouts", "first_middle_last",
    "keep_patient_data_out_of_logs", "node_from_json", "node_to_json", "open_client", "parse_node",
    "retrieve_study", "retrieve_to_library", "validate_ae_title",
]
