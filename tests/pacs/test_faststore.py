"""The lean C-STORE SCU (viewer.pacs.faststore, behind DimseClient.store) against real peers: Orthanc stores
files of several SOP classes and transfer syntaxes (JPEG, Implicit VR) with their data sets byte for byte; a
pynetdicom Storage SCP sees the data sets exactly as they are in the files (deflate included) under a
well-formed C-STORE-RQ, answers a failure for one and a warning for another, refuses one context; one that
aborts mid-transfer and one that stops answering end the store at the right instance with the errors that the
resumable send acts on."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import StoragePresentationContexts

from mifaslab.orthanc import OrthancProcess
from tests.pacs.conftest import CALLING_AE, ct_series, part10
from viewer.errors import (
    AssociationAbortedError,
    MalformedDicomError,
    OperationCancelled,
    PacsTimeoutError,
)
from viewer.pacs.dimse import DimseClient
from viewer.pacs.faststore import read_part10
from viewer.pacs.node import Node, Timeouts
from viewer.pacs.retry import classify
from viewer.pacs.status import DimseStatus

pytestmark = pytest.mark.network

FAST = Timeouts(connect_s=2, acse_s=3, dimse_s=1, network_s=5)
# pydicom's test files: (name, transfer syntax); three share the Secondary Capture SOP class
FILES = {
    "CT_small.dcm": "1.2.840.10008.1.2.1",  # CT, Explicit VR Little Endian
    "MR_small_implicit.dcm": "1.2.840.10008.1.2",  # MR, Implicit VR Little Endian
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",  # SC, JPEG Baseline
    "JPEG2000.dcm": "1.2.840.10008.1.2.4.91",  # SC, JPEG 2000
}
# Orthanc (DCMTK) writes undefined-length sequences with explicit lengths: JPEG2000.dcm has one, so it goes to the
# pynetdicom SCP only (which sees the raw bytes).
ORTHANC_FILES = ("CT_small.dcm", "MR_small_implicit.dcm", "SC_rgb_jpeg_dcmtk.dcm")
DEFLATED = "image_dfl.dcm"  # SC, Deflated Explicit VR Little Endian


def pydicom_file(name: str) -> bytes:
    """One of pydicom's test files under a new SOP Instance UID (the session's Orthanc holds some of them, and
    keeps what it holds), re-encoded by pydicom in its own transfer syntax."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def data_set(data: bytes) -> bytes:
    part = read_part10(data)
    return data[part.offset:]


def uid_of(data: bytes) -> str:
    return read_part10(data).sop_instance_uid


def test_orthanc_stores_several_sop_classes_and_transfer_syntaxes_byte_for_byte(orthanc: OrthancProcess,
                                                                                  node: Node) -> None:
    files = [pydicom_file(name) for name in ORTHANC_FILES] + [part10(ds) for ds in ct_series(3, seed=71)]
    for data, name in zip(files, ORTHANC_FILES, strict=False):
        assert read_part10(data).transfer_syntax_uid == FILES[name]
    seen: list[tuple[str, int]] = []
    answers = DimseClient(node).store(files, on_stored=lambda uid, code: seen.append((uid, code)))
    uids = [uid_of(data) for data in files]
    assert answers == dict.fromkeys(uids, 0) and seen == [(u, 0) for u in uids]
    for uid, data in zip(uids, files, strict=True):
        found = [r["ID"] for r in orthanc.rest("POST", "/tools/lookup", data=uid) if r["Type"] == "Instance"]
        assert len(found) == 1, uid
        held = orthanc.instance_file(found[0])
        assert read_part10(held).transfer_syntax_uid == read_part10(data).transfer_syntax_uid
        assert data_set(held) == data_set(data), uid


class Scp:
    """A pynetdicom Storage SCP on loopback that records each C-STORE-RQ and its raw data set; `answer(uid)`
    gives the status, or does something else (abort, hang)."""

    def __init__(self, answer: Callable[[object, str], int], refused_syntax: str | None = None) -> None:
        self.requests: list[tuple[str, str, int, int, bytes]] = []  # class, instance, message ID, priority, data set
        self.answer = answer
        ae = AE(ae_title="STORESCP")
        for context in StoragePresentationContexts:
            syntaxes = [s for s in ALL_TRANSFER_SYNTAXES if s != refused_syntax]
            ae.add_supported_context(context.abstract_syntax, syntaxes)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.node = Node(name="scp", ae_title="STORESCP", host="127.0.0.1", port=self.server.server_address[1],
                         calling_ae=CALLING_AE, timeouts=FAST)

    def _on_store(self, event: object) -> int:
        rq = event.request  # type: ignore[attr-defined]
        uid = str(rq.AffectedSOPInstanceUID)
        raw = rq.DataSet.getvalue() if isinstance(rq.DataSet, io.BytesIO) else b""
        self.requests.append((str(rq.AffectedSOPClassUID), uid, int(rq.MessageID), int(rq.Priority), raw))
        return self.answer(event, uid)


@pytest.fixture
def scp() -> Iterator[Callable[..., Scp]]:
    started: list[Scp] = []

    def start(answer: Callable[[object, str], int], refused_syntax: str | None = None) -> Scp:
        started.append(Scp(answer, refused_syntax))
        return started[-1]

    yield start
    for peer in started:
        peer.server.shutdown()


def test_statuses_warnings_failures_and_a_refused_context_each_concern_one_instance(scp) -> None:
    files = [pydicom_file(name) for name in FILES] + [pydicom_file(DEFLATED)] + [part10(ds) for ds in ct_series(3, seed=72)]
    uids = [uid_of(data) for data in files]
    failed, warned = uids[1], uids[5]
    codes = {failed: 0xA700, warned: 0xB007}
    peer = scp(lambda event, uid: codes.get(uid, 0), refused_syntax="1.2.840.10008.1.2.4.91")  # no JPEG 2000
    seen: list[tuple[str, int]] = []
    answers = DimseClient(peer.node).store(files, on_stored=lambda uid, code: seen.append((uid, code)))
    expected = {u: codes.get(u, 0) for u in uids}
    expected[uids[3]] = DimseStatus.SOP_CLASS_NOT_SUPPORTED  # JPEG2000.dcm: its context was refused, not sent
    assert answers == expected and seen == list(expected.items())
    sent = [(data, uid) for data, uid in zip(files, uids, strict=True) if uid != uids[3]]
    assert [r[1] for r in peer.requests] == [uid for _, uid in sent]
    message_ids = [r[2] for r in peer.requests]
    assert len(set(message_ids)) == len(message_ids)
    for (data, uid), (sop_class, _, _, priority, raw) in zip(sent, peer.requests, strict=True):
        assert sop_class == read_part10(data).sop_class_uid
        assert sop_class == pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPClassUID
        assert priority == 0  # medium
        assert raw == data_set(data), uid  # as stored in the file: deflated, JPEG, Implicit VR alike


def test_an_abort_mid_transfer_ends_the_store_after_the_last_acknowledged_instance(scp) -> None:
    files = [part10(ds) for ds in ct_series(6, seed=73)]
    uids = [uid_of(data) for data in files]

    def answer(event: object, uid: str) -> int:
        if uid == uids[3]:
            event.assoc.abort()  # type: ignore[attr-defined]  # received, but never answered
        return 0

    peer = scp(answer)
    seen: list[str] = []
    with pytest.raises(AssociationAbortedError) as caught:
        DimseClient(peer.node).store(files, on_stored=lambda uid, code: seen.append(uid))
    assert seen == uids[:3]
    assert classify(caught.value).kind == "aborted"  # resume.py checks uids[3] by C-FIND
    assert [r[1] for r in peer.requests] == uids[:4]


def test_a_peer_that_stops_answering_times_out_at_the_silent_instance(scp) -> None:
    files = [part10(ds) for ds in ct_series(4, seed=74)]
    uids = [uid_of(data) for data in files]
    release = threading.Event()

    def answer(event: object, uid: str) -> int:
        if uid == uids[2]:
            release.wait(10)  # silent far past dimse_s (1 s)
        return 0

    peer = scp(answer)
    seen: list[str] = []
    try:
        with pytest.raises(PacsTimeoutError) as caught:
            DimseClient(peer.node).store(files, on_stored=lambda uid, code: seen.append(uid))
    finally:
        release.set()
    assert seen == uids[:2]
    assert classify(caught.value).kind == "timeout"


def test_cancel_stops_between_instances(scp) -> None:
    files = [part10(ds) for ds in ct_series(5, seed=75)]
    uids = [uid_of(data) for data in files]
    peer = scp(lambda event, uid: 0)
    cancel = threading.Event()
    seen: list[str] = []

    def on_stored(uid: str, code: int) -> None:
        seen.append(uid)
        if len(seen) == 2:
            cancel.set()

    with pytest.raises(OperationCancelled):
        DimseClient(peer.node).store(files, on_stored=on_stored, cancel=cancel)
    assert seen == uids[:2] and [r[1] for r in peer.requests] == uids[:2]


def test_a_file_that_is_not_part10_is_refused_before_anything_is_sent(scp) -> None:
    peer = scp(lambda event, uid: 0)
    good = part10(ct_series(1, seed=76)[0])
    for bad in (b"not dicom", good[:140], good.replace(b"DICM", b"DICX", 1)):
        with pytest.raises(MalformedDicomError):
            DimseClient(peer.node).store([good, bad])
    assert peer.requests == []
