"""De-identification after PS3.15 Annex E: the Basic Application Level Confidentiality Profile and its options.

The profile's table (Table E.1-1, with its option columns) is data, ``viewer/resources/deid_basic_profile.json``;
this module only carries out its actions.  One :class:`Deidentifier` serves one export: its secret (random unless
given) fixes the UID map, the date offset and the pseudonym, so every file of the export agrees with every other.

Actions (E.3.1): ``X`` remove, ``Z`` empty (a sequence: no items), ``D`` a dummy value of the VR, ``K`` keep,
``C`` clean, ``U`` map the UID.  Attributes the table does not list are kept (with the dates option, shifted);
sequences are walked and their items handled by the same table, so nested attributes get the same treatment.

Implementation notes (how the choices the standard leaves open are made):

- Compound actions: the strictest action that keeps the object valid depends on the attribute's Type in each IOD,
  which we do not model, so a compound resolves to the strictest action valid for every Type: ``X/Z`` -> ``Z``,
  ``X/D``, ``Z/D``, ``X/Z/D`` -> ``D``, ``X/Z/U*`` -> the sequence is kept and the UIDs in its items are mapped
  (``U``).  A dummy carries no identity, so this removes as much identity as ``X`` would.
- A few attributes the table marks ``X`` are Type 1 in an IOD we export (Presentation Creation Date and Time in a
  presentation state): they get a dummy instead (``_REQUIRED_DUMMY``), so dciodvfy stays clean.
- When several chosen options name an action for one attribute, ``K`` beats ``C`` beats the basic action.
- ``C`` on a date (Retain Longitudinal ... Modified Dates): every DA and DT of the data set, listed or not, moves
  back by one whole number of days per export (intervals between studies hold); TM values are kept, which stays
  consistent because the shift is whole days.  ``C`` on text (Clean Descriptors, Structured Content, Device
  Identity, Patient Characteristics): the patient's name parts, IDs, accession number and birth date are cut out
  of the text; ``C`` on a sequence walks its items (in an SR's Content Sequence, Text Values are cleaned, and
  under the basic ``D`` they get the dummy, since the table does not list Text Value itself); ``C`` on anything else (overlay and curve data) removes it.
- Patient's Name and Patient ID get the pseudonym ("ANON^<8 hex>" and "ANON<8 hex>", made from the export's
  secret and the patient's original ID, unless the options give them) rather than nothing.
- Private attributes are removed; with Retain Safe Private, only those in ``SAFE_PRIVATE`` (creator and element,
  the diffusion b-values and directions of Siemens, GE and Philips MR: numbers, never text or dates) stay, with
  their creator element.  Curves (50xx) and overlays (60xx,3000 / 60xx,4000) follow their table rows.
- Blacking out rectangles (viewer.share.blackout) decodes the pixels with pydicom, sets each rectangle on every
  frame to the lowest stored value of that frame (the highest for MONOCHROME1, i.e. black on screen), and stores
  the result uncompressed in Explicit VR Little Endian.  Without rectangles the pixel data stays byte-identical.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, timedelta
from functools import lru_cache
from importlib import resources

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence

from viewer.errors import ExportError, MifasError
from viewer.share.blackout import black_out

OPTION_NAMES: Mapping[str, str] = {
    "retain-safe-private": "Retain Safe Private Option",
    "retain-uids": "Retain UIDs Option",
    "retain-device-identity": "Retain Device Identity Option",
    "retain-institution-identity": "Retain Institution Identity Option",
    "retain-patient-characteristics": "Retain Patient Characteristics Option",
    "retain-full-dates": "Retain Longitudinal Temporal Information with Full Dates Option",
    "retain-modified-dates": "Retain Longitudinal Temporal Information with Modified Dates Option",
    "clean-descriptors": "Clean Descriptors Option",
    "clean-structured-content": "Clean Structured Content Option",
    "clean-graphics": "Clean Graphics Option",
}
# PS3.16 CID 7050 De-identification Method: the profile, then one code per option.
PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")
OPTION_CODES: Mapping[str, tuple[str, str]] = {
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
}
# Private attributes kept under Retain Safe Private: (private creator, odd group, element byte) -> what it holds.
# Only numbers that describe the acquisition, never text or dates.
SAFE_PRIVATE: Mapping[tuple[str, int, int], str] = {
    ("SIEMENS MR HEADER", 0x0019, 0x0C): "B value",
    ("SIEMENS MR HEADER", 0x0019, 0x0D): "diffusion directionality",
    ("SIEMENS MR HEADER", 0x0019, 0x0E): "diffusion gradient direction",
    ("SIEMENS MR HEADER", 0x0019, 0x27): "B matrix",
    ("GEMS_PARM_01", 0x0043, 0x39): "slop integers (b value)",
    ("Philips Imaging DD 001", 0x2001, 0x03): "diffusion B factor",
}
DUMMY_TEXT = "ANONYMIZED"
_DUMMIES = {"UR": "urn:anonymized", "DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y", "IS": "0", "DS": "0",
            "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0}
_TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"}
_MAX_LEN = {"AE": 16, "CS": 16, "SH": 16, "LO": 64}
_ORDER = {"K": 2, "C": 1}
# Attributes the table removes (X) although an IOD we export requires them: kept with a dummy instead, so the object
# stays valid.  Presentation Creation Date/Time are Type 1 in every presentation state.
_REQUIRED_DUMMY = frozenset({0x00700082, 0x00700083})
# Patient's Name, Patient ID, Birth Date, Accession Number, Other Patient IDs/Names, Birth Name, Mother's Birth Name
_IDENTIFYING = (0x00100010, 0x00100020, 0x00100030, 0x00080050, 0x00101000, 0x00101001, 0x00101005, 0x00101060)


@dataclass(frozen=True)
class Options:
    """PS3.15 E.3 options; all off is the Basic Profile alone."""

    retain_safe_private: bool = False
    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_full_dates: bool = False
    retain_modified_dates: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False
    patient_name: str = ""  # "" -> the export's pseudonym "ANON^<8 hex>"
    patient_id: str = ""  # "" -> the same pseudonym's "ANON<8 hex>"

    @classmethod
    def from_names(cls, names: Iterable[str], **values) -> Options:
        """Options from CLI/UI slugs ("retain-modified-dates", ...); an unknown slug is a ValueError."""
        chosen = dict(values)
        for name in names:
            slug = name.strip().lower().replace("_", "-")
            if slug not in OPTION_NAMES:
                raise ValueError(f"unknown de-identification option {name!r}")
            chosen[slug.replace("-", "_")] = True
        return cls(**chosen)

    def chosen(self) -> list[str]:
        """Field names of the options switched on, in the table's order."""
        return [f.name for f in fields(self) if f.type in (bool, "bool") and getattr(self, f.name)]


@dataclass(frozen=True)
class Rect:
    """A rectangle of pixels (column, row) to black out; clipped to the image."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Row:
    name: str
    basic: str
    options: Mapping[str, str]


@dataclass(frozen=True)
class Profile:
    rows: Mapping[int, Row]  # tag -> row
    curves: Row  # (50xx,xxxx)
    overlays: Mapping[int, Row]  # element (0x3000, 0x4000) of the 60xx groups
    private: Row
    provenance: str


@lru_cache(maxsize=1)
def profile() -> Profile:
    """Table E.1-1 as loaded from viewer/resources/deid_basic_profile.json."""
    text = resources.files("viewer").joinpath("resources/deid_basic_profile.json").read_text(encoding="utf-8")
    data = json.loads(text)
    rows: dict[int, Row] = {}
    overlays: dict[int, Row] = {}
    curves = private = None
    for tag, name, basic, options in data["attributes"]:
        row = Row(name, basic, dict(options))
        if tag.startswith("GGGG"):
            private = row
        elif tag.startswith("50XX"):
            curves = row
        elif tag.startswith("60XX"):
            overlays[int(tag[5:], 16)] = row
        else:
            rows[int(tag.replace(",", ""), 16)] = row
    if curves is None or private is None or len(overlays) != 2:
        raise ExportError("The de-identification table shipped with the viewer is incomplete.")
    return Profile(rows, curves, overlays, private, data["provenance"])


def row_for(tag: int) -> Row | None:
    """The table row that governs ``tag`` (masked rows included), None when the table does not list it."""
    table = profile()
    group, element = tag >> 16, tag & 0xFFFF
    if group & 1:
        return table.private
    if group & 0xFF00 == 0x5000:
        return table.curves
    if group & 0xFF00 == 0x6000 and element in table.overlays:
        return table.overlays[element]
    return table.rows.get(tag)


def action_for(row: Row, options: Options) -> str:
    """The single action (X, Z, D, K, C or U) a row takes under ``options``; compounds resolved as documented."""
    best = None
    for name, action in row.options.items():
        if getattr(options, name, False) and (best is None or _ORDER[action] > _ORDER[best]):
            best = action
    if best is not None:
        return best
    basic = row.basic
    if basic == "X/Z":
        return "Z"
    if basic in ("X/D", "Z/D", "X/Z/D"):
        return "D"
    if basic == "X/Z/U*":
        return "U"
    return basic


def burned_in_reason(ds: Dataset) -> str | None:
    """Why this image may carry burned-in identity, None when it may not (a sentence without patient data).

    Burned In Annotation YES, or missing on a modality known to burn in text: ultrasound, secondary captures and
    photographs (ES, XC, GM, SM, OP), and encapsulated documents.  An explicit NO is believed.  A radiograph (CR,
    DX) without the attribute is not flagged: its markers are usually laterality, and flagging every radiograph
    would leave most of them out of an export; a user who knows of labels blacks them out.
    """
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES":
        return "Burned In Annotation is YES."
    if str(ds.get("RecognizableVisualFeatures", "") or "").strip().upper() == "YES":
        return "the image shows recognizable visual features."
    if burned == "NO":
        return None
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality == "US" or sop_class.startswith("1.2.840.10008.5.1.4.1.1.6") or sop_class.startswith(
            "1.2.840.10008.5.1.4.1.1.3"):
        return "ultrasound images usually carry burned-in text."
    if sop_class.startswith("1.2.840.10008.5.1.4.1.1.7") or modality in ("SC", "OT"):
        return "secondary captures are often screenshots carrying burned-in text."
    if modality in ("ES", "XC", "GM", "SM", "OP"):
        return "photographs may show the patient or a label."
    if sop_class.startswith("1.2.840.10008.5.1.4.1.1.104"):
        return "encapsulated documents may hold the patient's identity in their content."
    return None


class Deidentifier:
    """One per export: the UID map, the date offset and the pseudonym stay consistent across its files."""

    def __init__(self, options: Options = Options(), *, secret: bytes | None = None) -> None:
        self.options = options
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        digest = self._mac(b"date-offset")
        # Whole days, between one and eleven years back: intervals hold, the true dates do not show.
        self.date_offset_days = 365 + int.from_bytes(digest[:4], "big") % 3650

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The new UID for ``original``: the same within this Deidentifier, a 2.25 UID from an HMAC of it."""
        value = str(original).strip().rstrip("\0")
        return "2.25." + str(int.from_bytes(self._mac(b"uid:" + value.encode("ascii", "replace"))[:16], "big"))

    def pseudonym(self, patient_key: str) -> tuple[str, str]:
        """(Patient's Name, Patient ID) given to the patient whose original ID (or name) is ``patient_key``."""
        tag = self._mac(b"patient:" + patient_key.encode("utf-8", "replace")).hex()[:8].upper()
        return self.options.patient_name or f"ANON^{tag}", self.options.patient_id or f"ANON{tag}"

    def deidentify(self, ds: Dataset, *, blackout: Sequence[Rect] = ()) -> Dataset:
        """A de-identified copy of ``ds`` (the input is untouched); ExportError when that cannot be done."""
        sop = str(ds.get("SOPInstanceUID", "") or "unknown")
        try:
            return self._deidentify(ds, blackout)
        except MifasError as exc:
            raise ExportError(f"The image {sop} could not be de-identified: {_sentence(exc)}") from exc
        except Exception as exc:
            raise ExportError(f"The image {sop} could not be de-identified ({type(exc).__name__}).") from None

    def _deidentify(self, source: Dataset, blackout: Sequence[Rect]) -> Dataset:
        ds = copy.deepcopy(source)
        key = str(_get(source, 0x00100020) or _get(source, 0x00100010) or "")
        walk = _Walk(self, self.pseudonym(key), _identifiers(source))
        walk.dataset(ds)
        options = self.options
        cleaned = False
        if blackout:
            black_out(ds, blackout)
            cleaned = True
        ds.PatientIdentityRemoved = "YES"
        codes = [PROFILE_CODE] + [OPTION_CODES[name] for name in options.chosen()]
        if cleaned:
            codes.append(CLEAN_PIXEL_CODE)
        method = "PS3.15 E Basic Profile" + "".join(
            ", " + OPTION_NAMES[n.replace("_", "-")].removesuffix(" Option") for n in options.chosen())
        ds.DeidentificationMethod = method if len(method) <= 64 else method[:61] + "..."
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = DicomSequence(items)
        if options.retain_full_dates:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        elif options.retain_modified_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"
        meta = getattr(source, "file_meta", None)
        if meta is not None:
            new_meta = FileMetaDataset(copy.deepcopy(meta))
            if "SOPInstanceUID" in ds:
                new_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            if "SOPClassUID" in ds:
                new_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            if cleaned:
                new_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
            new_meta.pop(0x00020016, None)  # Source Application Entity Title: the sender's name
            ds.file_meta = new_meta
        return ds


class _Walk:
    """One pass over a data set and its sequences, applying the table."""

    def __init__(self, owner: Deidentifier, pseudonym: tuple[str, str], identifiers: list[str]) -> None:
        self.owner = owner
        self.options = owner.options
        self.pseudonym = pseudonym
        self.scrub = re.compile("|".join(re.escape(s) for s in identifiers), re.IGNORECASE) if identifiers else None
        self.content = "K"  # the action of the enclosing Content Sequence (an SR's text values follow it)

    def dataset(self, ds: Dataset) -> None:
        private = []
        for tag in list(ds.keys()):
            tag = int(tag)
            if (tag >> 16) & 1:
                private.append(tag)
            else:
                self.element(ds, tag)
        # Private data elements (gggg,xxee) kept only when safe-listed under their creator (gggg,00xx); a creator
        # stays only while it still owns a kept element.
        kept = {t for t in private if (t & 0xFFFF) >= 0x1000 and self._safe(ds, t)}
        blocks = {(t >> 16, (t & 0xFFFF) >> 8) for t in kept}
        for tag in private:
            group, element = tag >> 16, tag & 0xFFFF
            if tag in kept or (0x0010 <= element <= 0x00FF and (group, element) in blocks):
                continue
            del ds[tag]

    def _safe(self, ds: Dataset, tag: int) -> bool:
        if not self.options.retain_safe_private:
            return False
        group, element = tag >> 16, tag & 0xFFFF
        creator = _get(ds, (group << 16) | (element >> 8))
        return creator is not None and (str(creator).strip(), group, element & 0xFF) in SAFE_PRIVATE

    def element(self, ds: Dataset, tag: int) -> None:
        row = row_for(tag)
        try:
            elem = ds[tag]
            vr = elem.VR
        except Exception:  # a value pydicom cannot read as its VR: keep it only if the table keeps it
            if row is not None:
                del ds[tag]
            return
        action = action_for(row, self.options) if row is not None else "K"
        if tag == 0x0040A160 and row is None:  # Text Value: D under a dummied content tree, C when cleaned
            action = self.content
        if tag in (0x00100010, 0x00100020):
            elem.value = self.pseudonym[0] if tag == 0x00100010 else self.pseudonym[1]
            return
        if action == "X" and tag in _REQUIRED_DUMMY:
            action = "D"
        if action == "X":
            del ds[tag]
        elif action == "Z":
            elem.value = DicomSequence([]) if vr == "SQ" else None
        elif action == "U":
            if vr == "SQ":
                self.items(elem.value)
            elif vr == "UI":
                elem.value = _map_uids(self.owner, elem.value)
            else:
                del ds[tag]
        elif vr == "SQ":  # K, C, D: keep the sequence, its items handled by the same table
            outer = self.content
            if tag == 0x0040A730:
                self.content = action
            try:
                self.items(elem.value)
            finally:
                self.content = outer
        elif action == "D":
            self.dummy(elem)
        elif action == "C":
            self.clean(ds, tag, elem)
        elif vr in ("DA", "DT") and self.options.retain_modified_dates and not self.options.retain_full_dates:
            elem.value = _shift(elem.value, vr, self.owner.date_offset_days)  # K on an unlisted date: shifted too

    def items(self, items) -> None:
        for item in items or ():
            if isinstance(item, Dataset):
                self.dataset(item)

    def dummy(self, elem) -> None:
        vr = elem.VR
        if vr == "UI":
            elem.value = _map_uids(self.owner, elem.value)
        elif vr in _DUMMIES:
            elem.value = _DUMMIES[vr]
        elif vr in _TEXT_VRS:
            elem.value = DUMMY_TEXT[: _MAX_LEN.get(vr, 64)]
        elif vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
            elem.value = b"\0\0"
        else:
            elem.value = None

    def clean(self, ds: Dataset, tag: int, elem) -> None:
        vr = elem.VR
        if vr in ("DA", "DT"):
            elem.value = _shift(elem.value, vr, self.owner.date_offset_days)
        elif vr == "TM":
            pass  # whole-day shifts leave the time of day as it was
        elif vr in _TEXT_VRS:
            if self.scrub is not None and elem.value is not None:
                values = elem.value if elem.VM > 1 else [elem.value]
                cleaned = [self.scrub.sub("", str(v)) for v in values]
                elem.value = cleaned if elem.VM > 1 else cleaned[0]
        else:  # graphics data, numbers: nothing we can clean, so nothing is kept
            del ds[tag]


def _map_uids(owner: Deidentifier, value):
    if value is None or value == "":
        return value
    if isinstance(value, str):
        return owner.uid(value)
    return [owner.uid(v) for v in value]


def _shift(value, vr: str, days: int):
    """A DA/DT value (or list of them) moved back ``days`` days; what cannot be parsed is emptied."""
    if value is None or value == "":
        return value
    values = list(value) if not isinstance(value, str) else [value]
    out = []
    for v in values:
        text = str(v)
        try:
            moved = date(int(text[0:4]), int(text[4:6] or 1), int(text[6:8] or 1)) - timedelta(days=days)
        except (ValueError, IndexError):
            out.append("")
            continue
        head = f"{moved:%Y%m%d}"[: max(len(text[:8]), 4)]
        out.append(head + (text[8:] if vr == "DT" else ""))
    return out if not isinstance(value, str) else out[0]


def _get(ds: Dataset, tag: int):
    try:
        return ds[tag].value if tag in ds else None
    except Exception:
        return None


def _identifiers(ds: Dataset) -> list[str]:
    """Strings that identify the patient, cut out of text that Clean options keep (longest first): names, IDs,
    birth date and accession numbers found anywhere in the data set, its sequences included."""
    found: set[str] = set()

    def visit(item: Dataset, depth: int) -> None:
        for tag in _IDENTIFYING:
            value = _get(item, tag)
            for v in value if isinstance(value, list | tuple) else [value] if value else []:
                for part in [*re.split(r"[\^=]", str(v)), str(v)]:
                    if len(part.strip()) >= 2:
                        found.add(part.strip())
        if depth < 16:
            for elem in _sequences(item):
                for sub in elem.value or ():
                    if isinstance(sub, Dataset):
                        visit(sub, depth + 1)

    visit(ds, 0)
    return sorted(found, key=len, reverse=True)


def _sequences(ds: Dataset):
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
        except Exception:
            continue
        if elem.VR == "SQ":
            yield elem


def _sentence(exc: Exception) -> str:
    text = str(exc).strip()
    return text[0].lower() + text[1:] if text else "an unexpected error."

