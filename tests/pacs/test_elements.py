"""What the lean transports know of DICOM without pydicom: the element table, the UIDs written out, the hand
encoder of identifiers; and that a command-line retrieval really imports neither pydicom nor pynetdicom."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom.uid
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pynetdicom import sop_class
from pynetdicom.dsutils import encode

from tests.pacs.conftest import CALLING_AE, Seed
from viewer.errors import PacsError
from viewer.pacs import contexts
from viewer.pacs.elements import BY_TAG, ELEMENTS, element, keyword_of
from viewer.pacs.node import Node
from viewer.pacs.query import Identifier, query_identifier, retrieve_identifiers

ROOT = Path(__file__).resolve().parents[2]


def test_element_table_is_pydicom_s_dictionary() -> None:
    for keyword, (tag, vr) in ELEMENTS.items():
        assert (tag, vr) == (tag_for_keyword(keyword), dictionary_VR(keyword)), keyword
    assert BY_TAG[0x0020000D] == ("StudyInstanceUID", "UI")
    # outside the table: pydicom's dictionary answers
    assert element("PatientWeight") == (0x00101030, "DS") and element("NotAKeyword") is None
    assert keyword_of(0x00101030) == ("PatientWeight", "DS") and keyword_of(0x00091001) is None


def test_uids_written_out_are_pydicom_s_and_pynetdicom_s() -> None:
    for name in ("ImplicitVRLittleEndian", "ExplicitVRLittleEndian", "DeflatedExplicitVRLittleEndian",
                 "ExplicitVRBigEndian", "JPEGBaseline8Bit", "JPEGExtended12Bit", "JPEGLossless", "JPEGLosslessSV1",
                 "JPEGLSLossless", "JPEGLSNearLossless", "JPEG2000Lossless", "JPEG2000", "RLELossless"):
        assert getattr(contexts, name) == getattr(pydicom.uid, name), name
    for name, uid in contexts.STORAGE_SOP_CLASSES.items():
        assert uid == getattr(sop_class, name), name
    assert contexts.VERIFICATION == sop_class.Verification
    assert contexts.STUDY_ROOT_FIND == sop_class.StudyRootQueryRetrieveInformationModelFind
    assert contexts.STUDY_ROOT_MOVE == sop_class.StudyRootQueryRetrieveInformationModelMove
    assert contexts.STUDY_ROOT_GET == sop_class.StudyRootQueryRetrieveInformationModelGet
    assert contexts.PATIENT_ROOT_FIND == sop_class.PatientRootQueryRetrieveInformationModelFind


def _pydicom_bytes(identifier: Identifier, implicit: bool) -> bytes:
    return encode(identifier.to_dataset(), implicit, True)


@pytest.mark.parametrize("implicit", [True, False])
def test_hand_encoder_matches_pydicom_on_the_engine_s_identifiers(implicit: bool) -> None:
    identifiers = [query_identifier(level, {}) for level in ("patient", "study", "series", "image")]
    identifiers.append(query_identifier("study", {"StudyInstanceUID": "1.2.3", "SOPClassesInStudy": ""}))
    identifiers.append(query_identifier("image", {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4",
                                                  "SOPClassUID": ""}))
    identifiers += retrieve_identifiers("1.2.3") + retrieve_identifiers("1.2.3", "1.2.3.4")
    identifiers += retrieve_identifiers("1.2.3", "1.2.3.4", [f"1.2.3.4.{i}" for i in range(300)])
    for identifier in identifiers:
        assert identifier._encode_by_hand(implicit) == _pydicom_bytes(identifier, implicit)


_KEYWORDS = sorted(k for k in ELEMENTS if k != "SpecificCharacterSet")
_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="\\"),
                max_size=24)
_VALUES = st.one_of(_TEXT, st.lists(_TEXT, min_size=2, max_size=4), st.from_regex(r"[+-]?[0-9]{1,8}", fullmatch=True),
                    st.text(max_size=8))  # the last: anything, including non-ASCII (left to pydicom)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYWORDS), _VALUES, max_size=8), st.booleans())
def test_identifier_bytes_are_pydicom_s(keys: dict[str, object], implicit: bool) -> None:
    identifier = Identifier(keys)
    try:
        reference = _pydicom_bytes(identifier, implicit)  # None when pydicom cannot write it
    except Exception:  # a value pydicom refuses while building the data set (its validation)
        reference = None
    if reference is None:  # ours must refuse it too, with a sentence
        with pytest.raises(PacsError, match="cannot be encoded"):
            identifier.encode(implicit)
        return
    assert identifier.encode(implicit) == reference


def test_query_identifier_splits_lists_as_pydicom_does() -> None:
    identifier = query_identifier("image", {"SOPInstanceUID": "1.2\\1.3"})
    assert identifier.SOPInstanceUID == ["1.2", "1.3"]
    assert identifier.to_dataset().SOPInstanceUID == ["1.2", "1.3"]


def test_command_line_retrieval_imports_neither_pydicom_nor_pynetdicom(node: Node, seed_data: Seed,
                                                                       tmp_path: Path) -> None:
    """``mifas-pacs get --library`` on the lean C-FIND and C-GET: ~0.3 s of imports it must not pay."""
    settings_path = tmp_path / "settings.json"
    settings_path.write_text("{}", encoding="utf-8")
    probe = ("import json, sys\nfrom viewer.pacs.cli import main\ncode = main(sys.argv[1:])\n"
             "heavy = sorted(m for m in ('pydicom', 'pynetdicom', 'requests', 'numpy') if m in sys.modules)\n"
             "print(json.dumps({'code': code, 'heavy': heavy}))\n")
    done = subprocess.run(
        [sys.executable, "-c", probe, "get", "--config", str(settings_path), "--calling-ae", CALLING_AE,
         "--node", f"{node.ae_title}@{node.host}:{node.port}", "--study", seed_data.ct_study,
         "--library", str(tmp_path / "lib")],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"code": 0, "heavy": []}, done.stderr[-3000:]


_CONCURRENT_FALLBACKS = """
import sys, threading
if sys.argv[1] == "unguarded":
    import viewer.imports
    viewer.imports.need = lambda *packages: None  # the control: every thread imports on its own
from viewer.library.header import read_header
from viewer.pacs.elements import element
from viewer.pacs.query import Identifier
from viewer.pacs.fastfind import identifier_dict

assert "pydicom" not in sys.modules
barrier = threading.Barrier(4)
errors = []
calls = [lambda: read_header(b"not dicom" * 20),
         lambda: Identifier(PatientName="\\u00e9l\\u00e8ve").encode(False),
         lambda: element("PatientWeight"),
         lambda: identifier_dict(b"\\x10\\x00\\x10\\x00\\x04\\x00\\x00\\x00DOE ", True)]

def run(call):
    barrier.wait()
    try:
        call()
    except Exception as exc:
        if type(exc).__name__ not in ("NotDicomError", "PacsError"):
            errors.append(repr(exc))

threads = [threading.Thread(target=run, args=(c,)) for c in calls]
for t in threads: t.start()
for t in threads: t.join()
print(errors)
"""


def test_fallbacks_import_pydicom_safely_from_several_threads_at_once() -> None:
    """The lean path's fallbacks import pydicom and pynetdicom on first use, on whatever thread meets one; two
    at once must not see half-initialised modules (viewer.imports.need)."""
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", _CONCURRENT_FALLBACKS, "guarded"], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "[]"
