"""Presentation contexts (PS3.8 9.3.2.2, PS3.7 D.3.3.4): which SOP classes and transfer syntaxes we propose for a
C-GET (our C-STORE sub-operations in the SCP role) and accept in our Storage SCP.  Compressed syntaxes are the
ones MIFAS Viewer decodes, so a PACS sends each instance as it stores it, without transcoding.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import Any

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import sop_class as _sop_class
from pynetdicom.presentation import (
    AllStoragePresentationContexts,
    PresentationContext,
    build_context,
    build_role,
)
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet, Verification

from viewer.library.store import is_valid_uid

log = logging.getLogger(__name__)

# PS3.8 9.3.2.2: presentation context IDs are the odd numbers 1-255, so at most 128 per association.
PRESENTATION_CONTEXTS_MAX = 128

UNCOMPRESSED_SYNTAXES: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Every compressed syntax MIFAS Viewer decodes (pylibjpeg, pylibjpeg-libjpeg/-openjpeg/-rle, zlib), most common
# first: when the context budget runs short, the rare ones are dropped first.
COMPRESSED_SYNTAXES: tuple[str, ...] = (
    JPEGLosslessSV1,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEG2000,
    RLELossless,
    JPEGLSLossless,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    JPEGLossless,
    DeflatedExplicitVRLittleEndian,
)
# What our Storage SCP (C-MOVE destination) accepts: anything we can decode, as the sender prefers it.
SCP_TRANSFER_SYNTAXES: tuple[str, ...] = (*UNCOMPRESSED_SYNTAXES, *COMPRESSED_SYNTAXES, ExplicitVRBigEndian)


def _uid(name: str) -> str:
    return str(getattr(_sop_class, name))


# Storage SOP classes offered in a C-GET when the caller does not say which the study holds, in priority order:
# the first ones get every compressed syntax while the context budget lasts, the rest uncompressed only.
DEFAULT_GET_SOP_CLASSES: tuple[str, ...] = tuple(_uid(n) for n in (
    "CTImageStorage", "MRImageStorage", "UltrasoundImageStorage", "UltrasoundMultiFrameImageStorage",
    "ComputedRadiographyImageStorage", "DigitalXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForPresentation", "XRayAngiographicImageStorage",
    "SecondaryCaptureImageStorage", "EnhancedCTImageStorage", "EnhancedMRImageStorage",
    "PositronEmissionTomographyImageStorage", "NuclearMedicineImageStorage", "XRayRadiofluoroscopicImageStorage",
    "EnhancedXAImageStorage", "EnhancedXRFImageStorage", "EnhancedPETImageStorage",
    "LegacyConvertedEnhancedCTImageStorage", "LegacyConvertedEnhancedMRImageStorage",
    "LegacyConvertedEnhancedPETImageStorage", "EnhancedMRColorImageStorage",
    "DigitalXRayImageStorageForProcessing", "DigitalMammographyXRayImageStorageForProcessing",
    "DigitalIntraOralXRayImageStorageForPresentation", "BreastTomosynthesisImageStorage",
    "XRay3DAngiographicImageStorage", "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage", "MultiFrameTrueColorSecondaryCaptureImageStorage",
    "MultiFrameSingleBitSecondaryCaptureImageStorage", "VLPhotographicImageStorage", "VLEndoscopicImageStorage",
    "VLMicroscopicImageStorage", "OphthalmicPhotography8BitImageStorage", "RTImageStorage", "RTDoseStorage",
    "SegmentationStorage", "RTStructureSetStorage", "RTPlanStorage", "RTIonPlanStorage",
    "SpatialRegistrationStorage", "GrayscaleSoftcopyPresentationStateStorage",
    "KeyObjectSelectionDocumentStorage", "BasicTextSRStorage", "EnhancedSRStorage", "ComprehensiveSRStorage",
    "EncapsulatedPDFStorage", "RawDataStorage",
))
# SOP classes without pixel data never need a compressed syntax.
_NO_PIXEL_SOP_CLASSES = frozenset(_uid(n) for n in (
    "RTStructureSetStorage", "RTPlanStorage", "RTIonPlanStorage", "SpatialRegistrationStorage",
    "GrayscaleSoftcopyPresentationStateStorage", "KeyObjectSelectionDocumentStorage", "BasicTextSRStorage",
    "EnhancedSRStorage", "ComprehensiveSRStorage", "EncapsulatedPDFStorage", "RawDataStorage",
))


def get_presentation_contexts(
    sop_class_uids: Collection[str] | None = None,
) -> tuple[list[PresentationContext], list[Any]]:
    """Presentation contexts and SCP/SCU role items (PS3.7 D.3.3.4) for a C-GET association.

    C-GET brings the instances back as C-STORE sub-operations on our own association, so we must propose, in
    the SCP role, a context for every storage SOP class we want (PS3.4 C.4.3.1).  A peer picks *one* transfer
    syntax per context, by its own preference; Orthanc then sends each instance on a context whose syntax equals
    the one it stored, transcoding only when there is none.  So every (SOP class, compressed syntax) pair gets
    a context of its own, and the uncompressed syntaxes share one.  With 128 contexts per association that
    covers about eleven SOP classes fully: pass the classes the study holds (from an IMAGE-level C-FIND) to
    fit them; without a list, :data:`DEFAULT_GET_SOP_CLASSES` is offered, compressed syntaxes for the first.
    """
    classes = list(dict.fromkeys(str(u) for u in (sop_class_uids or DEFAULT_GET_SOP_CLASSES) if is_valid_uid(str(u))))
    budget = PRESENTATION_CONTEXTS_MAX - 1  # one is the C-GET information model
    if len(classes) > budget:
        log.warning("C-GET offers only the first %d of %d SOP classes", budget, len(classes))
        classes = classes[:budget]
    contexts = [build_context(StudyRootQueryRetrieveInformationModelGet, list(UNCOMPRESSED_SYNTAXES))]
    contexts += [build_context(uid, list(UNCOMPRESSED_SYNTAXES)) for uid in classes]
    budget -= len(classes)
    for uid in classes:
        if uid in _NO_PIXEL_SOP_CLASSES:
            continue
        for syntax in COMPRESSED_SYNTAXES[:budget]:
            contexts.append(build_context(uid, [syntax]))
        budget -= min(budget, len(COMPRESSED_SYNTAXES))
        if budget <= 0:
            break
    roles = [build_role(uid, scp_role=True) for uid in classes]
    return contexts, roles


def storage_scp_contexts(extra_sop_class_uids: Iterable[str] = ()) -> list[PresentationContext]:
    """What our Storage SCP supports: every storage SOP class pynetdicom knows plus `extra_sop_class_uids`,
    each with every transfer syntax we can decode (the sender chooses)."""
    uids = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    uids += [str(u) for u in extra_sop_class_uids if is_valid_uid(str(u))]
    contexts = [build_context(uid, list(SCP_TRANSFER_SYNTAXES)) for uid in dict.fromkeys(uids)]
    contexts.append(build_context(Verification))
    return contexts

