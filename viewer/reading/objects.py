"""Which library series and instances are images to show, and which are reading objects (no Qt).

A study in the library holds image series (CT, MR, ...) and, beside them, series of non-image objects: presentation
states (modality PR), structured reports (SR), key object selections (KO), encapsulated documents and the like.
The index keeps them all alike (their rows and columns are NULL); the browser, the hanging protocols and the
viewports use :func:`is_image_series` to leave the non-image ones out of the places where images go.
"""

from __future__ import annotations

from viewer.library.store import InstanceRecord, SeriesRecord

GSPS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State Storage
COMPREHENSIVE_3D_SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
KEY_OBJECT_SELECTION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
READING_SOP_CLASSES = frozenset({GSPS_SOP_CLASS, COMPREHENSIVE_3D_SR_SOP_CLASS, KEY_OBJECT_SELECTION_SOP_CLASS})

# Modalities of series that hold no images (PS3.3 C.7.3.1.1.1 and the IODs that fix them).
NON_IMAGE_MODALITIES = frozenset({"PR", "SR", "KO", "DOC", "REG", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE",
                                  "FID", "PLAN", "AU", "ECG", "HD", "RWV", "SMR", "M3D", "ASMT", "TEXTUREMAP"})
# SOP class UID prefixes of non-image storage classes: presentation states (1.1.11.x), SR and KOS (1.1.88.x),
# waveforms (1.1.9.x), encapsulated documents (1.1.104.x), raw data, spatial registration, ...
_NON_IMAGE_PREFIXES = ("1.2.840.10008.5.1.4.1.1.11.", "1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.9.",
                       "1.2.840.10008.5.1.4.1.1.104.", "1.2.840.10008.5.1.4.1.1.66", "1.2.840.10008.5.1.4.1.1.481.2",
                       "1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.481.5")


def is_reading_modality(modality: str) -> bool:
    """PR, SR or KO: a series that holds a reading, not images."""
    return modality.strip().upper() in {"PR", "SR", "KO"}


def is_image_series(record: SeriesRecord) -> bool:
    """True for a series of images (to show in a viewport); False for presentation states, reports, key object
    selections and other non-image series (by their modality)."""
    return record.modality.strip().upper() not in NON_IMAGE_MODALITIES


def is_image_sop_class(sop_class_uid: str) -> bool:
    """False for the storage classes that hold no pixels (presentation states, SR, KOS, waveforms, ...)."""
    uid = sop_class_uid.strip()
    return not any(uid.startswith(p) or uid == p.rstrip(".") for p in _NON_IMAGE_PREFIXES)


def is_image_instance(record: InstanceRecord) -> bool:
    """An instance with pixels: an image SOP class and rows and columns in the index."""
    return is_image_sop_class(record.sop_class_uid) and bool(record.rows) and bool(record.columns)
