"""MIFAS Viewer: a desktop DICOM viewer whose PACS connection survives server failover.

Layers (data flows one way, top to bottom):

    viewer.pacs     DIMSE and DICOMweb transports          (no Qt)
    viewer.library  the local study store: SQLite + files  (no Qt)
    viewer.dicom    decoding, pixel pipeline, geometry     (no Qt)
    viewer.ui       Qt widgets, signals and worker threads

See docs/architecture.md.
"""

__version__ = "0.1.0"
