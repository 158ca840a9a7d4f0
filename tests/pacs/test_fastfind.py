"""The lean C-FIND SCU (viewer.pacs.fastfind) against real peers: the session's Orthanc (every level, the same
rows as pynetdicom's C-FIND gives, the limit), an Orthanc that answers in UTF-8 and serves only the AE titles
it lists, pynetdicom C-FIND SCPs we script (a flood that ignores C-CANCEL, an oversized match, a failure
status, cancelling), and raw sockets (an endless identifier, an abort before any answer).  The hand-written
identifier reader is checked against pydicom's decode + identifier_to_dict with Hypothesis."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator

import pynetdicom.dsutils
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from mifaslab.orthanc import OrthancProcess, free_port
from tests.pacs.conftest import CALLING_AE, Seed, ct_series, part10
from tests.pacs.scripted import accept_first_context, hold, read_pdu
from viewer.errors import (
    AssociationAbortedError,
    OperationCancelled,
    PacsError,
    PacsStatusError,
    PacsTimeoutError,
)
from viewer.pacs import fastfind, pdu
from viewer.pacs.dimse import DimseClient
from viewer.pacs.fastfind import FastFindClient, identifier_dict, read_identifier
from viewer.pacs.node import DEFAULT_RETURN_KEYS, Matches, Node, Timeouts
from viewer.pacs.query import identifier_to_dict, query_identifier

QUICK = Timeouts(connect_s=1.0, acse_s=1.0, dimse_s=1.0, network_s=2.0)
PATIENT = Timeouts(connect_s=2.0, acse_s=10.0, dimse_s=10.0, network_s=20.0)


def local_node(port: int, ae_title: str = "ANYSCP", timeouts: Timeouts = PATIENT) -> Node:
    return Node(name="test", ae_title=ae_title, host="127.0.0.1", port=port, calling_ae=CALLING_AE, timeouts=timeouts)


def pynetdicom_rows(node: Node, level: str, keys: dict[str, str]) -> list[dict[str, str]]:
    """The reference: pynetdicom's C-FIND SCU, each pending identifier through identifier_to_dict."""
    model = PatientRootQueryRetrieveInformationModelFind if level == "patient" else StudyRootQueryRetrieveInformationModelFind
    ae = AE(ae_title=node.calling_ae)
    ae.add_requested_context(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    assert assoc.is_established
    rows = []
    try:
        for status, identifier in assoc.send_c_find(query_identifier(level, keys).to_dataset(), model):
            assert "Status" in status
            if status.Status in (0xFF00, 0xFF01):
                assert identifier is not None
                rows.append(identifier_to_dict(identifier))
            else:
                assert status.Status == 0x0000
    finally:
        assoc.release()
    return rows


def ordered(rows: list[dict[str, str]]) -> list[list[tuple[str, str]]]:
    return sorted(list(row.items()) for row in rows)


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the matches that took pydicom's path instead of the hand-written reader."""
    calls: list[int] = []
    real = pynetdicom.dsutils.decode  # fastfind imports it where it falls back, so this is what it calls

    def counting(*args: object) -> Dataset:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pynetdicom.dsutils, "decode", counting)
    return calls


# -- against the session's Orthanc -----------------------------------------------------------------------------


QUERIES: list[tuple[str, Callable[[Seed], dict[str, str]]]] = [
    ("patient", lambda s: {}),
    ("patient", lambda s: {"PatientID": "MIFAS-T2"}),
    ("study", lambda s: {}),
    ("study", lambda s: {"PatientName": "Other*"}),
    ("series", lambda s: {"StudyInstanceUID": s.two_series_study}),
    ("series", lambda s: {"StudyInstanceUID": s.ct_study, "SeriesDescription": ""}),
    ("image", lambda s: {"StudyInstanceUID": s.ct_study, "SeriesInstanceUID": s.ct_series}),
    ("image", lambda s: {"StudyInstanceUID": s.two_series_study, "SeriesInstanceUID": s.two_series[1],
                         "SOPClassUID": "", "Rows": ""}),
]


@pytest.mark.network
@pytest.mark.parametrize(("level", "keys"), QUERIES, ids=[f"{q[0]}-{i}" for i, q in enumerate(QUERIES)])
def test_every_level_gives_the_rows_pynetdicom_gives(node: Node, seed_data: Seed, fallbacks: list[int], level: str,
                                                      keys: Callable[[Seed], dict[str, str]]) -> None:
    query = keys(seed_data)
    ours = FastFindClient(node).find(level, query)
    theirs = pynetdicom_rows(node, level, query)
    assert isinstance(ours, Matches) and not ours.truncated
    assert len(ours) == len(theirs) > 0
    assert ordered(ours) == ordered(theirs)
    if "Rows" in query:  # US: left to pydicom, the same rows all the same
        assert len(fallbacks) == len(ours) and all(row["Rows"] == "64" for row in ours)
    else:
        assert fallbacks == []  # Orthanc's answers are read by the hand-written reader


@pytest.mark.network
def test_dimse_client_find_is_the_lean_c_find(node: Node, seed_data: Seed, fallbacks: list[int]) -> None:
    rows = DimseClient(node).find("image", {"StudyInstanceUID": seed_data.ct_study})
    assert isinstance(rows, Matches) and not rows.truncated
    assert sorted(r["SOPInstanceUID"] for r in rows) == sorted(seed_data.instances_of(seed_data.ct_study))
    assert fallbacks == []


@pytest.mark.network
def test_limit_truncates_and_says_so(node: Node, seed_data: Seed) -> None:
    keys = {"StudyInstanceUID": seed_data.ct_study, "SeriesInstanceUID": seed_data.ct_series}
    everything = FastFindClient(node).find("image", keys)
    assert len(everything) == 31 and not everything.truncated
    for limit in (1, 5, 30):
        rows = FastFindClient(node).find("image", keys, limit=limit)
        assert len(rows) == limit and rows.truncated
        assert all(row in everything for row in rows)
    exact = DimseClient(node).find("image", keys, limit=31)  # all of them arrived: nothing was cut
    assert ordered(exact) == ordered(everything) and not exact.truncated


@pytest.mark.network
def test_limit_is_checked(node: Node) -> None:
    with pytest.raises(ValueError, match="limit must be between"):
        FastFindClient(node).find("study", limit=0)


@pytest.mark.network
def test_cancel_before_start(node: Node) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(OperationCancelled):
        FastFindClient(node).find("study", cancel=cancel)


# -- an Orthanc that answers in UTF-8 and serves only the AE titles it lists -------------------------------------

NAMES = {"ISO_IR 192": "山田^太郎=やまだ^たろう", "ISO_IR 100": "Ærøskøbing^Jörg", "": "Plain^Ascii"}


@pytest.fixture(scope="module")
def utf8_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    with OrthancProcess(tmp_path_factory.mktemp("utf8"), aet="STRICTUTF8", always_allow=False, dicomweb=False,
                        remote_access=False, modalities={"mifas": (CALLING_AE, "127.0.0.1", free_port())},
                        extra_config={"DefaultEncoding": "Utf8"}) as o:
        for seed, (charset, name) in enumerate(NAMES.items()):
            ds = ct_series(2, seed=20 + seed, patient_name=name, patient_id=f"CHARSET-{seed}")[0]
            if charset:
                ds.SpecificCharacterSet = charset
            ds.StudyDescription = "Größe \\ ½ 測定" if charset == "ISO_IR 192" else "plain"
            o.upload_bytes(part10(ds))
        yield o


@pytest.mark.network
@pytest.mark.parametrize("level", ["patient", "study", "series", "image"])
def test_utf8_answers_are_read_as_pynetdicom_reads_them(utf8_orthanc: OrthancProcess, fallbacks: list[int],
                                                        level: str) -> None:
    node = utf8_orthanc.node(calling_ae=CALLING_AE, timeouts=PATIENT)
    ours = FastFindClient(node).find(level, {"PatientName": "", "PatientID": "CHARSET-*"}
                                     if level in ("patient", "study") else {})
    theirs = pynetdicom_rows(node, level, {"PatientName": "", "PatientID": "CHARSET-*"}
                             if level in ("patient", "study") else {})
    assert ordered(ours) == ordered(theirs) and len(ours) >= 3
    if level in ("patient", "study"):
        assert {row["PatientName"] for row in ours} == set(NAMES.values())
    if level == "study":
        assert "Größe\\ ½ 測定" in {row["StudyDescription"] for row in ours}  # two values, each right-stripped
    assert fallbacks == []


@pytest.mark.network
def test_unknown_calling_ae_gets_the_hint(utf8_orthanc: OrthancProcess) -> None:
    """Orthanc aborts a C-FIND from an AE title it does not list, before answering anything."""
    node = utf8_orthanc.node(calling_ae="STRANGER", timeouts=PATIENT)
    assert DimseClient(node).echo() >= 0  # C-ECHO is always allowed
    for find in (FastFindClient(node).find, DimseClient(node).find):
        with pytest.raises(AssociationAbortedError) as caught:
            find("study", {})
        assert str(caught.value) == (
            f"The PACS 'STRICTUTF8' at 127.0.0.1:{utf8_orthanc.dicom_port} aborted the association during the "
            f"C-FIND (it may not allow C-FIND from our AE title 'STRANGER': check that the PACS lists it).")


# -- pynetdicom C-FIND SCPs we script ----------------------------------------------------------------------------


@pytest.fixture
def find_scp() -> Iterator[Callable[[Callable[[evt.Event], Iterator[object]]], int]]:
    """Start a pynetdicom Q/R FIND SCP whose C-FIND handler is `handler`; returns its port."""
    servers = []

    def start(handler: Callable[[evt.Event], Iterator[object]]) -> int:
        ae = AE(ae_title="ANYSCP")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, handler)])
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()


def a_match(index: int, text_bytes: int = 0) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.{index + 1}"
    ds.PatientName = f"Flood^{index}"
    if text_bytes:
        ds.TextValue = "x" * text_bytes  # UT: a 4-byte length in either syntax
    return ds


def flood(event: evt.Event) -> Iterator[object]:
    """Matches without end; C-CANCEL is ignored (stops only when the association is gone)."""
    index = 0
    while event.assoc.is_established and index < 1_000_000:
        yield 0xFF00, a_match(index)
        index += 1


def honouring(delay_s: float) -> Callable[[evt.Event], Iterator[object]]:
    """Many matches, slowly, and a Cancel status once a C-CANCEL arrived (PS3.4 C.4.1.2.3)."""

    def handler(event: evt.Event) -> Iterator[object]:
        for index in range(10_000):
            if event.is_cancelled:
                yield 0xFE00, None
                return
            time.sleep(delay_s)
            yield 0xFF00, a_match(index)
        yield 0x0000, None

    return handler


@pytest.mark.network
@pytest.mark.timeout(60)
def test_a_flood_that_ignores_c_cancel_is_bounded(find_scp: Callable[..., int]) -> None:
    rows = FastFindClient(local_node(find_scp(flood))).find("study", limit=50)
    assert rows.truncated and len(rows) == 50
    assert rows[49] == {"PatientName": "Flood^49", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.50"}


@pytest.mark.network
def test_a_peer_that_honours_c_cancel(find_scp: Callable[..., int]) -> None:
    rows = DimseClient(local_node(find_scp(honouring(0.005)))).find("study", limit=7)
    assert rows.truncated and [r["PatientName"] for r in rows] == [f"Flood^{i}" for i in range(7)]


@pytest.mark.network
@pytest.mark.parametrize("handler", [honouring(0.02), flood], ids=["honours", "ignores"])
def test_caller_cancel_sends_c_cancel_and_raises(find_scp: Callable[..., int],
                                                 handler: Callable[[evt.Event], Iterator[object]]) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(OperationCancelled, match="The search was cancelled"):
        FastFindClient(local_node(find_scp(handler))).find("study", cancel=cancel, limit=1_000_000)


@pytest.mark.network
def test_oversized_match_is_a_clear_error(find_scp: Callable[..., int]) -> None:
    def handler(event: evt.Event) -> Iterator[object]:
        yield 0xFF00, a_match(0)
        yield 0xFF00, a_match(1, text_bytes=2 << 20)
        yield 0x0000, None

    with pytest.raises(PacsError, match=r"sent a search match of \d+ bytes, more than the 1048576 bytes a match "
                                        r"may have; the search was stopped") as caught:
        FastFindClient(local_node(find_scp(handler))).find("study")
    assert caught.value.transient is False


@pytest.mark.network
@pytest.mark.parametrize(("status", "words"), [(0xA700, "it is out of resources"),
                                               (0xC000, "it was unable to process the request")])
def test_failure_status(find_scp: Callable[..., int], status: int, words: str) -> None:
    def handler(event: evt.Event) -> Iterator[object]:
        yield 0xFF00, a_match(0)
        yield status, None

    with pytest.raises(PacsStatusError, match=f"could not run the search: {words}") as caught:
        FastFindClient(local_node(find_scp(handler))).find("study")
    assert caught.value.status == status


@pytest.mark.network
def test_optional_keys_pending_and_a_warning_final(find_scp: Callable[..., int]) -> None:
    def handler(event: evt.Event) -> Iterator[object]:
        yield 0xFF01, a_match(0)  # pending, optional keys not supported
        yield 0x0001, None  # a warning ends it

    rows = FastFindClient(local_node(find_scp(handler))).find("patient")
    assert rows == [{"PatientName": "Flood^0", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1"}]
    assert not rows.truncated


# -- raw sockets -----------------------------------------------------------------------------------------------


def accept_find_context(conn: socket.socket) -> None:
    accept_first_context(conn, CALLING_AE)


def read_request(conn: socket.socket) -> None:
    """The C-FIND-RQ: its command, then its identifier (each one PDU here)."""
    for _ in range(2):
        pdu_type, _ = read_pdu(conn)
        assert pdu_type == pdu.PduType.P_DATA_TF


@pytest.mark.network
def test_peer_that_aborts_before_answering_gets_the_hint(scripted_peer: Callable[..., int]) -> None:
    port = scripted_peer(lambda conn: (accept_find_context(conn), read_request(conn),
                                       conn.sendall(pdu.encode_abort(2, 0)), hold(conn)))
    with pytest.raises(AssociationAbortedError, match=f"may not allow C-FIND from our AE title '{CALLING_AE}'"):
        FastFindClient(local_node(port, timeouts=QUICK)).find("study")


@pytest.mark.network
def test_peer_silent_after_the_request_times_out(scripted_peer: Callable[..., int]) -> None:
    port = scripted_peer(lambda conn: (accept_find_context(conn), hold(conn)))
    with pytest.raises(PacsTimeoutError, match="nothing received for 1 s during the C-FIND"):
        FastFindClient(local_node(port, timeouts=QUICK)).find("study")


@pytest.mark.network
@pytest.mark.timeout(60)
def test_endless_identifier_keeps_memory_bounded(scripted_peer: Callable[..., int]) -> None:
    """A pending C-FIND-RSP whose identifier never ends, in small PDUs: an error after a few buffers, not a
    buffer per 5 MiB for as long as the peer goes on."""
    def script(conn: socket.socket) -> None:
        accept_find_context(conn)
        read_request(conn)
        command = pdu.encode_command({
            pdu.CommandTag.AFFECTED_SOP_CLASS_UID: fastfind.STUDY_ROOT_FIND,
            pdu.CommandTag.COMMAND_FIELD: pdu.CommandField.C_FIND_RSP,
            pdu.CommandTag.MESSAGE_ID_BEING_RESPONDED_TO: 1,
            pdu.CommandTag.COMMAND_DATA_SET_TYPE: 0x0000,
            pdu.CommandTag.STATUS: 0xFF00,
        })
        conn.sendall(pdu.encode_p_data(1, True, command, 16384)[0])
        fragment = bytes(16372)
        pdv = pdu.PDV_HEADER.pack(len(fragment) + 2, 1, 0) + fragment  # a data set fragment, never the last
        one = pdu.PDU_HEADER.pack(pdu.PduType.P_DATA_TF, 0, len(pdv)) + pdv
        for _ in range((1 << 30) // len(one)):  # up to 1 GiB, until we hang up
            conn.sendall(one)

    port = scripted_peer(script)
    tracemalloc.start()
    try:
        with pytest.raises(PacsError, match="(sent a search match of more than the|a data set of more than 4 times the) 1048576 bytes"):
            FastFindClient(local_node(port)).find("study")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak / 1e6:.0f} MB held"


# -- the identifier reader, against pydicom ------------------------------------------------------------------------

KEYWORDS = sorted({k for keys in DEFAULT_RETURN_KEYS.values() for k in keys} | {"QueryRetrieveLevel", "RetrieveAETitle"},
                  key=lambda k: tag_for_keyword(k) or 0)
LONG_VRS = {"OB", "OD", "OF", "OL", "OW", "OV", "SQ", "UC", "UR", "UT", "UN", "SV", "UV"}
CHARSETS = {None: "ascii", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf-8"}
ASCII_TEXT = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "\\")
LATIN1_EXTRA = "äöüßÆØÅéñ½×"
UTF8_EXTRA = LATIN1_EXTRA + "山田太郎やまだŻółćĞ測定€"


def element(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    group, elem = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHL", group, elem, len(value)) + value
    if vr in LONG_VRS:
        return struct.pack("<HH2sHL", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def pad(value: bytes, vr: str) -> bytes:
    return value + (b"\x00" if vr == "UI" else b" ") if len(value) % 2 else value


@st.composite
def text_value(draw: st.DrawFn, vr: str, charset: str | None) -> str:
    """One valid value (before encoding) for `vr`; several values joined with a backslash at times."""
    extra = {None: "", "ISO_IR 100": LATIN1_EXTRA, "ISO_IR 192": UTF8_EXTRA}[charset]
    digits = "0123456789"

    def one() -> str:
        if vr == "PN":
            group = st.lists(st.text(ASCII_TEXT.replace("^", "").replace("=", "") + extra, max_size=8), max_size=5)
            groups = draw(st.lists(group.map("^".join), min_size=1, max_size=3))
            return "=".join(groups) + draw(st.sampled_from(["", "=", "=="]))
        if vr in ("LO", "SH"):
            return draw(st.text(ASCII_TEXT + extra, max_size=64 if vr == "LO" else 16))
        if vr == "CS":
            return draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _", max_size=16))
        if vr == "DA":
            return draw(st.sampled_from(["", "20240315", "19991231", "20240101-20241231"]))
        if vr == "TM":
            return draw(st.from_regex(r"\A([01][0-9]|2[0-3])([0-5][0-9]([0-5][0-9](\.[0-9]{1,6})?)?)?\Z"))
        if vr == "IS":
            number = draw(st.integers(-(2**31), 2**31 - 1))
            text = draw(st.sampled_from(["", "+", "0"])) + str(number) if number >= 0 else str(number)
            spaces = 12 - len(text)
            left = draw(st.integers(0, max(spaces, 0)))
            return " " * left + text + " " * draw(st.integers(0, max(spaces - left, 0)))
        if vr == "UI":
            parts = draw(st.lists(st.text(digits, min_size=1, max_size=6).filter(lambda p: p == "0" or p[0] != "0"),
                                  min_size=2, max_size=8))
            return ".".join(parts)
        if vr == "AE":
            return draw(st.text(ASCII_TEXT, max_size=16))
        raise AssertionError(vr)

    return "\\".join(one() for _ in range(draw(st.integers(1, 3))))


@st.composite
def identifiers(draw: st.DrawFn) -> tuple[bytes, bool]:
    implicit = draw(st.booleans())
    charset = draw(st.sampled_from(list(CHARSETS)))
    chosen = draw(st.lists(st.sampled_from(KEYWORDS), unique=True))
    elements = []
    if charset is not None:
        elements.append(element(0x00080005, "CS", pad(charset.encode(), "CS"), implicit))
    for keyword in sorted(chosen, key=lambda k: tag_for_keyword(k) or 0):
        vr = dictionary_VR(keyword)
        codec = CHARSETS[charset] if vr in ("PN", "LO", "SH") else "ascii"
        value = pad(draw(text_value(vr, charset)).encode(codec), vr)
        if draw(st.booleans()) and vr != "UI":
            value += b"  "  # more padding than needed
        elements.append(element(tag_for_keyword(keyword), vr, value, implicit))  # type: ignore[arg-type]
    return b"".join(elements), implicit


def pydicom_rows(data: bytes, implicit: bool) -> dict[str, str]:
    return identifier_to_dict(decode(io.BytesIO(data), implicit, True))


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(identifiers())
def test_reader_gives_what_pydicom_gives(identifier: tuple[bytes, bool]) -> None:
    data, implicit = identifier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = pydicom_rows(data, implicit)
    got = read_identifier(data, implicit)
    assert got is not None, "the reader gave up on a plain identifier"
    assert list(got.items()) == list(want.items())


@st.composite
def raw_identifiers(draw: st.DrawFn) -> tuple[bytes, bool]:
    """Any bytes as the values: whatever the reader reads must be what pydicom reads."""
    implicit = draw(st.booleans())
    charset = draw(st.sampled_from([None, b"ISO_IR 100", b"ISO_IR 192", b"ISO 2022 IR 87", b"\\ISO 2022 IR 87"]))
    vrs = ["PN", "LO", "SH", "CS", "DA", "TM", "IS", "UI", "AE", "LT", "UT", "UR", "DS", "OB", "US", "UN", "SQ"]
    elements = [element(0x00080005, "CS", pad(charset, "CS"), implicit)] if charset else []
    for keyword in sorted(draw(st.lists(st.sampled_from(KEYWORDS + ["TextValue", "ImageComments",
                                                                      "RetrieveURL", "SliceThickness", "Rows"]),
                                         unique=True)), key=lambda k: tag_for_keyword(k) or 0):
        vr = dictionary_VR(keyword) if implicit or draw(st.booleans()) else draw(st.sampled_from(vrs))
        value = draw(st.binary(max_size=24) | st.text(ASCII_TEXT + "\\ \x00" + UTF8_EXTRA, max_size=12).map(
            lambda t: t.encode("utf-8")))
        elements.append(element(tag_for_keyword(keyword), vr, pad(value, vr), implicit))  # type: ignore[arg-type]
    return b"".join(elements), implicit


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_identifiers())
def test_reader_never_differs_from_pydicom(identifier: tuple[bytes, bool]) -> None:
    data, implicit = identifier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            want: dict[str, str] | None = pydicom_rows(data, implicit)
        except Exception:
            want = None
        got = read_identifier(data, implicit)
        if got is not None:
            assert want is not None and list(got.items()) == list(want.items())
        if want is not None:
            assert list(identifier_dict(data, implicit).items()) == list(want.items())


@pytest.mark.parametrize("implicit", [True, False])
def test_what_the_reader_leaves_to_pydicom(implicit: bool) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.SliceThickness = "2.50"  # DS
    ds.ReferencedStudySequence = [Dataset()]
    ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = "1.2.3"
    data = encode(ds, implicit, True)
    assert data is not None
    assert read_identifier(data, implicit) is None
    assert identifier_dict(data, implicit) == pydicom_rows(data, implicit)
    assert identifier_dict(data, implicit)["PatientName"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"


@pytest.mark.network
@pytest.mark.timeout(60)
def test_a_flooded_planning_query_stops_the_retrieval_with_a_sentence(find_scp: Callable[..., int],
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path) -> None:
    """The engine plans with these queries: a listing the PACS floods past the limit is bounded (the lean C-FIND
    stops at it) and the retrieval says so instead of planning on a part of the study."""
    from viewer.library import Library
    from viewer.pacs import retrieve as engine
    from viewer.pacs.cluster import ClusterProfile

    monkeypatch.setattr(engine, "SERIES_PER_STUDY_MAX", 40)
    profile = ClusterProfile.of_node(local_node(find_scp(flood)), "get")
    with Library.open(tmp_path / "lib") as library:
        with pytest.raises(PacsError, match=r"more matches than the limit \(40\); the retrieval was not started"):
            engine.retrieve(profile, "1.2.826.0.1.3680043.8.498.1", library=library)
        assert library.studies() == []
