"""The project's one exception tree.

Every error that can reach a user carries a message written for that user (``str(exc)``): what went wrong, in
words a clinician or IT person understands, never a stack trace. Errors from libraries (pydicom, pynetdicom,
requests, sqlite3, OSError) are translated once, where they enter our code, with ``raise ... from``.

    MifasError
    ├── DicomError                    a file or dataset we cannot use
    │   ├── NotDicomError             not a DICOM file at all (or empty)
    │   ├── MalformedDicomError       DICOM, but truncated, inconsistent or hostile
    │   ├── ImageTooLargeError        header claims more pixels than our limit allows
    │   ├── UnsupportedImageError     no codec / photometric interpretation we can show
    │   └── VolumeError               a series that cannot be assembled into a 3D volume (it is still read in 2D)
    ├── LibraryError                  the local study store
    │   ├── StorageFullError          the disk is full; nothing stored was damaged
    │   └── InstanceNotFoundError     asked for an instance the library does not hold
    ├── OperationCancelled            the user cancelled a long operation
    ├── ExportError                   an export could not be written
    └── PacsError                     talking to a PACS node
        ├── NodeUnreachableError      connection refused, no route, name not resolved
        ├── AssociationRejectedError  the node refused us (wrong AE title, unknown caller, ...)
        ├── AssociationAbortedError   the association was aborted or the connection dropped
        ├── PacsTimeoutError          the node stopped answering within the timeout
        ├── PacsStatusError           the node answered with a failure status
        └── DicomWebError             the DICOMweb server failed or sent something we cannot parse
"""

from __future__ import annotations


class MifasError(Exception):
    """Root of every error MIFAS Viewer raises on purpose; ``str()`` is a user-facing sentence."""


class DicomError(MifasError):
    pass


class NotDicomError(DicomError):
    pass


class MalformedDicomError(DicomError):
    pass


class ImageTooLargeError(DicomError):
    pass


class UnsupportedImageError(DicomError):
    pass


class VolumeError(DicomError):
    pass


class LibraryError(MifasError):
    pass


class StorageFullError(LibraryError):
    pass


class InstanceNotFoundError(LibraryError):
    pass


class OperationCancelled(MifasError):
    pass


class ExportError(MifasError):
    """An export (files, a ZIP, media, pictures or a movie) could not be written; the message says why."""


class PacsError(MifasError):
    """Talking to a PACS failed.  Decisions read the fields, never the text (``viewer.pacs.retry.classify``):

    transient
        True when the raiser knows another try may succeed (a busy node, an answer cut off mid-stream), False
        when it knows it will not, None to let the error's type decide.
    status
        The DIMSE status the node answered (PS3.7 Annex C), when there was one.
    http_status
        The HTTP status a DICOMweb server answered, when there was one.
    """

    def __init__(self, message: str = "", *, transient: bool | None = None, status: int | None = None,
                 http_status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status
        self.http_status = http_status


class NodeUnreachableError(PacsError):
    pass


class AssociationRejectedError(PacsError):
    pass


class AssociationAbortedError(PacsError):
    pass


class PacsTimeoutError(PacsError):
    pass


class PacsStatusError(PacsError):
    def __init__(self, message: str, status: int | None = None, **fields: object) -> None:
        super().__init__(message, status=status, **fields)  # type: ignore[arg-type]


class DicomWebError(PacsError):
    pass
