"""The reading's key images as a Key Object Selection document, title "Of Interest" (DCM 113000) (no Qt).

One IMAGE item per key image, in the order they were marked; for a multi-frame image, its marked frames as
Referenced Frame Number (1-based) on that item.  :func:`parse_kos` reads the (image, frame) keys back from ours
and other programs' documents, bounded by :data:`SR_CONTENT_ITEMS_MAX`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from viewer.errors import MalformedDicomError, MifasError
from viewer.imports import need
from viewer.limits import SR_CONTENT_ITEMS_MAX
from viewer.reading.annotations import FrameKey
from viewer.reading.presentation import MANUFACTURER, _for_highdicom

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


def build_kos(images: Sequence[Dataset], key_frames: Sequence[FrameKey], *, sop_instance_uid: str,
              series_uid: str, series_number: int, instance_number: int, description: str = "") -> Dataset:
    """The Key Object Selection of `key_frames` ((SOP Instance UID, frame index)), whose images' headers are in
    `images`; frames of images not in `images` are left out."""
    need("pydicom")
    from highdicom.ko import KeyObjectSelection, KeyObjectSelectionDocument
    from pydicom.sr.codedict import codes

    by_uid = {str(h.SOPInstanceUID): _for_highdicom(h) for h in images}
    frames: dict[str, list[int]] = {}
    for uid, index in key_frames:
        if uid in by_uid:
            frames.setdefault(uid, []).append(index + 1)
    if not frames:
        raise ValueError("a key object selection needs at least one key image")
    referenced = [by_uid[uid] for uid in frames]
    content = KeyObjectSelection(codes.DCM.OfInterest, referenced, description=description[:1024] or None)
    ds = KeyObjectSelectionDocument(referenced, content, series_uid, series_number, sop_instance_uid,
                                    instance_number, manufacturer=MANUFACTURER)
    for item in ds.ContentSequence:
        if str(item.get("ValueType", "")) != "IMAGE":
            continue
        ref = item.ReferencedSOPSequence[0]
        uid = str(ref.ReferencedSOPInstanceUID)
        if int(by_uid[uid].get("NumberOfFrames", 1) or 1) > 1:
            ref.ReferencedFrameNumber = sorted(set(frames[uid]))
    return ds


def parse_kos(ds: Dataset) -> list[FrameKey]:
    """The key images of a Key Object Selection (frame index 0 for single-frame images and for multi-frame
    references without frame numbers)."""
    uid = str(ds.get("SOPInstanceUID", "") or "")[:64]
    try:
        items = ds.get("ContentSequence", []) or []
        if len(items) > SR_CONTENT_ITEMS_MAX:
            raise MalformedDicomError(f"The key object selection {uid} holds more content than the viewer accepts.")
        keys: list[FrameKey] = []
        for item in items:
            if str(item.get("ValueType", "")) != "IMAGE" or not item.get("ReferencedSOPSequence"):
                continue
            ref = item.ReferencedSOPSequence[0]
            sop = str(ref.ReferencedSOPInstanceUID)
            numbers = ref.get("ReferencedFrameNumber")
            if numbers in (None, ""):
                keys.append((sop, 0))
                continue
            values = [numbers] if isinstance(numbers, (int, str)) else list(numbers)
            if len(keys) + len(values) > SR_CONTENT_ITEMS_MAX:
                raise MalformedDicomError(f"The key object selection {uid} names too many frames.")
            keys.extend((sop, max(int(n) - 1, 0)) for n in values)
        return keys
    except MifasError:
        raise
    except Exception as exc:
        raise MalformedDicomError(f"The key object selection {uid} cannot be read: {type(exc).__name__}.") from exc
