"""The data elements of query and retrieve identifiers (PS3.6 6, PS3.4 C.6): keyword, tag and VR.

The lean C-FIND and C-GET write and read their identifiers by hand; this table is what they need to know of the
DICOM dictionary for the attributes the viewer asks for and PACSs answer with, so that a command-line retrieval
never imports pydicom (about 0.3 s of its start).  Any other keyword or tag is looked up in pydicom's dictionary
(imported then).  tests/pacs/test_elements.py checks every entry against pydicom's dictionary.
"""

from __future__ import annotations

from viewer.imports import need

# keyword -> (tag, VR)
ELEMENTS: dict[str, tuple[int, str]] = {
    "SpecificCharacterSet": (0x00080005, "CS"),
    "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "StudyDate": (0x00080020, "DA"),
    "SeriesDate": (0x00080021, "DA"),
    "StudyTime": (0x00080030, "TM"),
    "SeriesTime": (0x00080031, "TM"),
    "AccessionNumber": (0x00080050, "SH"),
    "QueryRetrieveLevel": (0x00080052, "CS"),
    "RetrieveAETitle": (0x00080054, "AE"),
    "InstanceAvailability": (0x00080056, "CS"),
    "FailedSOPInstanceUIDList": (0x00080058, "UI"),
    "Modality": (0x00080060, "CS"),
    "ModalitiesInStudy": (0x00080061, "CS"),
    "SOPClassesInStudy": (0x00080062, "UI"),
    "ReferringPhysicianName": (0x00080090, "PN"),
    "StudyDescription": (0x00081030, "LO"),
    "SeriesDescription": (0x0008103E, "LO"),
    "PatientName": (0x00100010, "PN"),
    "PatientID": (0x00100020, "LO"),
    "IssuerOfPatientID": (0x00100021, "LO"),
    "PatientBirthDate": (0x00100030, "DA"),
    "PatientSex": (0x00100040, "CS"),
    "BodyPartExamined": (0x00180015, "CS"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "StudyID": (0x00200010, "SH"),
    "SeriesNumber": (0x00200011, "IS"),
    "InstanceNumber": (0x00200013, "IS"),
    "NumberOfPatientRelatedStudies": (0x00201200, "IS"),
    "NumberOfPatientRelatedSeries": (0x00201202, "IS"),
    "NumberOfPatientRelatedInstances": (0x00201204, "IS"),
    "NumberOfStudyRelatedSeries": (0x00201206, "IS"),
    "NumberOfStudyRelatedInstances": (0x00201208, "IS"),
    "NumberOfSeriesRelatedInstances": (0x00201209, "IS"),
}
# tag -> (keyword, VR)
BY_TAG: dict[int, tuple[str, str]] = {tag: (keyword, vr) for keyword, (tag, vr) in ELEMENTS.items()}


def element(keyword: str) -> tuple[int, str] | None:
    """The tag and dictionary VR of a keyword, or None when it is not a DICOM keyword."""
    found = ELEMENTS.get(keyword)
    if found is not None:
        return found
    need("pydicom")
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    return None if tag is None else (int(tag), dictionary_VR(tag))


def keyword_of(tag: int) -> tuple[str, str] | None:
    """The keyword and dictionary VR of a tag, or None for one outside the dictionary (private, repeating
    groups, group lengths)."""
    found = BY_TAG.get(tag)
    if found is not None:
        return found
    need("pydicom")
    from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag

    return (keyword_for_tag(tag), dictionary_VR(tag)) if dictionary_has_tag(tag) else None
