"""Presentation contexts (PS3.8 9.3.2.2, PS3.7 D.3.3.4): which SOP classes and transfer syntaxes we propose for a
C-GET (our C-STORE sub-operations in the SCP role) and accept in our Storage SCP.  Compressed syntaxes are the
ones MIFAS Viewer decodes, so a PACS sends each instance as it stores it, without transcoding.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import Any

from viewer.imports import need
from viewer.pacs.pdu import ProposedContext
from viewer.uid import is_valid_uid

# The UIDs are written out (PS3.6 A-1; tests/pacs/test_node.py checks them against pydicom's and pynetdicom's), so
# that the lean transports import neither (about 0.3 s of a command-line retrieval's start).
ImplicitVRLittleEndian = "1.2.840.10008.1.2"
ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"
DeflatedExplicitVRLittleEndian = "1.2.840.10008.1.2.1.99"
ExplicitVRBigEndian = "1.2.840.10008.1.2.2"
JPEGBaseline8Bit = "1.2.840.10008.1.2.4.50"
JPEGExtended12Bit = "1.2.840.10008.1.2.4.51"
JPEGLossless = "1.2.840.10008.1.2.4.57"
JPEGLosslessSV1 = "1.2.840.10008.1.2.4.70"
JPEGLSLossless = "1.2.840.10008.1.2.4.80"
JPEGLSNearLossless = "1.2.840.10008.1.2.4.81"
JPEG2000Lossless = "1.2.840.10008.1.2.4.90"
JPEG2000 = "1.2.840.10008.1.2.4.91"
RLELossless = "1.2.840.10008.1.2.5"

VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"

# The storage SOP classes named in this module, by pydicom's and pynetdicom's keyword.
STORAGE_SOP_CLASSES: dict[str, str] = {
    "CTImageStorage": "1.2.840.10008.5.1.4.1.1.2",
    "MRImageStorage": "1.2.840.10008.5.1.4.1.1.4",
    "UltrasoundImageStorage": "1.2.840.10008.5.1.4.1.1.6.1",
    "UltrasoundMultiFrameImageStorage": "1.2.840.10008.5.1.4.1.1.3.1",
    "ComputedRadiographyImageStorage": "1.2.840.10008.5.1.4.1.1.1",
    "DigitalXRayImageStorageForPresentation": "1.2.840.10008.5.1.4.1.1.1.1",
    "DigitalMammographyXRayImageStorageForPresentation": "1.2.840.10008.5.1.4.1.1.1.2",
    "XRayAngiographicImageStorage": "1.2.840.10008.5.1.4.1.1.12.1",
    "SecondaryCaptureImageStorage": "1.2.840.10008.5.1.4.1.1.7",
    "EnhancedCTImageStorage": "1.2.840.10008.5.1.4.1.1.2.1",
    "EnhancedMRImageStorage": "1.2.840.10008.5.1.4.1.1.4.1",
    "PositronEmissionTomographyImageStorage": "1.2.840.10008.5.1.4.1.1.128",
    "NuclearMedicineImageStorage": "1.2.840.10008.5.1.4.1.1.20",
    "XRayRadiofluoroscopicImageStorage": "1.2.840.10008.5.1.4.1.1.12.2",
    "EnhancedXAImageStorage": "1.2.840.10008.5.1.4.1.1.12.1.1",
    "EnhancedXRFImageStorage": "1.2.840.10008.5.1.4.1.1.12.2.1",
    "EnhancedPETImageStorage": "1.2.840.10008.5.1.4.1.1.130",
    "LegacyConvertedEnhancedCTImageStorage": "1.2.840.10008.5.1.4.1.1.2.2",
    "LegacyConvertedEnhancedMRImageStorage": "1.2.840.10008.5.1.4.1.1.4.4",
    "LegacyConvertedEnhancedPETImageStorage": "1.2.840.10008.5.1.4.1.1.128.1",
    "EnhancedMRColorImageStorage": "1.2.840.10008.5.1.4.1.1.4.3",
    "DigitalXRayImageStorageForProcessing": "1.2.840.10008.5.1.4.1.1.1.1.1",
    "DigitalMammographyXRayImageStorageForProcessing": "1.2.840.10008.5.1.4.1.1.1.2.1",
    "DigitalIntraOralXRayImageStorageForPresentation": "1.2.840.10008.5.1.4.1.1.1.3",
    "BreastTomosynthesisImageStorage": "1.2.840.10008.5.1.4.1.1.13.1.3",
    "XRay3DAngiographicImageStorage": "1.2.840.10008.5.1.4.1.1.13.1.1",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage": "1.2.840.10008.5.1.4.1.1.7.2",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage": "1.2.840.10008.5.1.4.1.1.7.3",
    "MultiFrameTrueColorSecondaryCaptureImageStorage": "1.2.840.10008.5.1.4.1.1.7.4",
    "MultiFrameSingleBitSecondaryCaptureImageStorage": "1.2.840.10008.5.1.4.1.1.7.1",
    "VLPhotographicImageStorage": "1.2.840.10008.5.1.4.1.1.77.1.4",
    "VLEndoscopicImageStorage": "1.2.840.10008.5.1.4.1.1.77.1.1",
    "VLMicroscopicImageStorage": "1.2.840.10008.5.1.4.1.1.77.1.2",
    "OphthalmicPhotography8BitImageStorage": "1.2.840.10008.5.1.4.1.1.77.1.5.1",
    "RTImageStorage": "1.2.840.10008.5.1.4.1.1.481.1",
    "RTDoseStorage": "1.2.840.10008.5.1.4.1.1.481.2",
    "SegmentationStorage": "1.2.840.10008.5.1.4.1.1.66.4",
    "RTStructureSetStorage": "1.2.840.10008.5.1.4.1.1.481.3",
    "RTPlanStorage": "1.2.840.10008.5.1.4.1.1.481.5",
    "RTIonPlanStorage": "1.2.840.10008.5.1.4.1.1.481.8",
    "SpatialRegistrationStorage": "1.2.840.10008.5.1.4.1.1.66.1",
    "GrayscaleSoftcopyPresentationStateStorage": "1.2.840.10008.5.1.4.1.1.11.1",
    "KeyObjectSelectionDocumentStorage": "1.2.840.10008.5.1.4.1.1.88.59",
    "BasicTextSRStorage": "1.2.840.10008.5.1.4.1.1.88.11",
    "EnhancedSRStorage": "1.2.840.10008.5.1.4.1.1.88.22",
    "ComprehensiveSRStorage": "1.2.840.10008.5.1.4.1.1.88.33",
    "EncapsulatedPDFStorage": "1.2.840.10008.5.1.4.1.1.104.1",
    "RawDataStorage": "1.2.840.10008.5.1.4.1.1.66",
}

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
    return STORAGE_SOP_CLASSES[name]


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
) -> tuple[list[ProposedContext], list[str]]:
    """Presentation contexts, and the SOP classes we take the SCP role for (PS3.7 D.3.3.4), of a C-GET association.

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
    pairs = [(STUDY_ROOT_GET, UNCOMPRESSED_SYNTAXES)]
    pairs += [(uid, UNCOMPRESSED_SYNTAXES) for uid in classes]
    budget -= len(classes)
    for uid in classes:
        if uid in _NO_PIXEL_SOP_CLASSES:
            continue
        for syntax in COMPRESSED_SYNTAXES[:budget]:
            pairs.append((uid, (syntax,)))
        budget -= min(budget, len(COMPRESSED_SYNTAXES))
        if budget <= 0:
            break
    contexts = [ProposedContext(2 * i + 1, uid, syntaxes) for i, (uid, syntaxes) in enumerate(pairs)]
    return contexts, classes


def storage_scp_contexts(extra_sop_class_uids: Iterable[str] = ()) -> list[Any]:
    """What our Storage SCP (pynetdicom's) supports: every storage SOP class pynetdicom knows plus
    `extra_sop_class_uids`, each with every transfer syntax we can decode (the sender chooses)."""
    need("pynetdicom")
    from pynetdicom.presentation import AllStoragePresentationContexts, build_context

    uids = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    uids += [str(u) for u in extra_sop_class_uids if is_valid_uid(str(u))]
    contexts = [build_context(uid, list(SCP_TRANSFER_SYNTAXES)) for uid in dict.fromkeys(uids)]
    contexts.append(build_context(VERIFICATION))
    return contexts
