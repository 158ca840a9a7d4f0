"""What hanging protocols look at (no Qt): a study's image series, and for projection images each image.

:func:`gather` reads the library's index (modality, series number and description, body part) and, for the
attributes the index does not hold (View Position, laterality, Image Type, Patient Orientation), one header per
series: the first.  A projection series (CR, DX, MG, ...) of a few single-frame images is read image by image,
since its images differ in view (a mammography series often holds all four views).

Reading objects are not images and are never hung: Presentation States, Structured Reports and Key Object
Selections (modalities PR, SR, KO, and their SOP classes), and any series whose first instance has no pixel
matrix (:mod:`viewer.reading.objects` decides).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from viewer.errors import MifasError
from viewer.reading.objects import is_image_instance, is_image_series

log = logging.getLogger(__name__)

PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "RG", "XA", "RF"})
PER_IMAGE_MAX = 16  # a projection series of at most this many images is read image by image


@dataclass(frozen=True)
class ImageFacts:
    """A series, or one image of a projection series, as protocols see it (text as in the files)."""

    series_uid: str
    instance_uid: str | None  # None: the whole series (its first image's header)
    modality: str = ""
    series_number: int | None = None
    description: str = ""
    body_part: str = ""
    view_position: str = ""
    laterality: str = ""  # Image Laterality, else Laterality (series)
    image_type: tuple[str, ...] = ()
    patient_orientation: tuple[str, ...] = ()
    instance_count: int = 0
    frame_of_reference_uid: str = ""

    @property
    def key(self) -> tuple[str, str | None]:
        return self.series_uid, self.instance_uid


@dataclass(frozen=True)
class StudyFacts:
    study_uid: str
    description: str = ""
    images: tuple[ImageFacts, ...] = ()

    def series_images(self) -> list[ImageFacts]:
        """One entry per series (the first image of a series read image by image)."""
        seen: set[str] = set()
        out = []
        for image in self.images:
            if image.series_uid not in seen:
                seen.add(image.series_uid)
                out.append(image)
        return out


def _text(header, keyword: str) -> str:
    value = getattr(header, keyword, "") if header is not None else ""
    return str(value or "").strip()


def _values(header, keyword: str) -> tuple[str, ...]:
    value = getattr(header, keyword, None) if header is not None else None
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, str) else list(value) if hasattr(value, "__iter__") else [value]
    return tuple(str(v).strip() for v in items)


def _read(library, sop_instance_uid: str):
    from viewer.dicom.image import read_header

    try:
        return read_header(library.path_of(sop_instance_uid))
    except (MifasError, OSError, ValueError) as exc:
        log.warning("hanging: the header of instance %s cannot be read (%s)", sop_instance_uid, type(exc).__name__)
        return None


def _facts(record, header, instance_uid: str | None) -> ImageFacts:
    laterality = _text(header, "ImageLaterality") or _text(header, "Laterality")
    return ImageFacts(
        series_uid=record.series_uid, instance_uid=instance_uid, modality=record.modality or _text(header, "Modality"),
        series_number=record.series_number, description=record.series_description or "",
        body_part=record.body_part or _text(header, "BodyPartExamined"), view_position=_text(header, "ViewPosition"),
        laterality=laterality, image_type=_values(header, "ImageType"),
        patient_orientation=_values(header, "PatientOrientation"), instance_count=record.instance_count,
        frame_of_reference_uid=_text(header, "FrameOfReferenceUID"))


def gather(library, study_uid: str) -> StudyFacts:
    """The facts of a study's image series, in series order (one header read per series; image by image for a
    small projection series)."""
    images: list[ImageFacts] = []
    description = ""  # the study description, from the first header read (Library.study lists every study)
    for record in library.series(study_uid):
        per_image = (record.modality or "").upper() in PROJECTION_MODALITIES and record.instance_count <= PER_IMAGE_MAX
        instances = library.instances(record.series_uid, limit=-1 if per_image else 1)  # the index, no file
        if not instances or not is_image_series(record) or not is_image_instance(instances[0]):
            continue
        per_image = per_image and all(i.number_of_frames <= 1 for i in instances)
        if per_image and len(instances) > 1:
            headers = [(_read(library, i.sop_instance_uid), i.sop_instance_uid) for i in instances]
        else:
            headers = [(_read(library, instances[0].sop_instance_uid), None)]
        images += [_facts(record, header, uid) for header, uid in headers]
        description = description or next((_text(h, "StudyDescription") for h, _ in headers if h is not None), "")
    return StudyFacts(study_uid, description, tuple(images))
