"""The retry-and-resume engine against real peers on loopback, with real faults and real time.

A "takeover" as a client sees it: the address goes away (Orthanc killed with SIGKILL, or frozen with SIGSTOP),
then a NEW Orthanc answers on the SAME ports with the SAME storage and index (a cluster's shared disk).
Byte identity: the encoded data set (everything after the file meta information, which each sender writes
itself) of every library file has the SHA-256 of the source file we uploaded.  Timings are never asserted.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from mifaslab.orthanc import DICOMWEB_PLUGIN, ORTHANC_BINARY, OrthancProcess, free_port
from tests.pacs.conftest import CALLING_AE, ct_series, part10
from tests.support import require
from viewer.errors import NodeUnreachableError, OperationCancelled
from viewer.library.jobs import JobStore, resume_pending, run_job
from viewer.library.store import SCHEMA_VERSION, Library
from viewer.pacs.cluster import ClusterAddress, ClusterProfile
from viewer.pacs.health import EventLog
from viewer.pacs.node import Timeouts
from viewer.pacs.resume import ResilientClient
from viewer.pacs.retry import (
    AttemptFailed,
    FellBack,
    GaveUp,
    Resumed,
    RetryEvent,
    RetryPolicy,
    UnrequestedInstance,
)

pytestmark = [pytest.mark.network, pytest.mark.slow]

AET = "ORTHANCHA"
COUNT = 300
# Short enough for a test, long enough for a loaded 2-core machine: a dead node is noticed in 1-3 s.
FAST = Timeouts(connect_s=1.0, acse_s=2.0, dimse_s=3.0, network_s=10.0)
POLICY = RetryPolicy(budget_s=45, backoff_initial_s=0.2, backoff_max_s=1.0)
TAKEOVER_DELAY_S = 1.0


def dataset_digest(data: bytes) -> str:
    """SHA-256 of the data set of a Part 10 file: the bytes after the file meta information group."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00", "no (0002,0000) group length"
    group_length = int.from_bytes(data[140:144], "little")
    return hashlib.sha256(data[144 + group_length:]).hexdigest()


class Cluster:
    """One Orthanc standing in for 'the PACS behind the virtual IP', replaced on the same ports and disk."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.orthanc = self._new().start()
        self._threads: list[threading.Thread] = []

    def _new(self) -> OrthancProcess:
        return OrthancProcess(self.work_dir, aet=AET, dicom_port=self.dicom_port, http_port=self.http_port,
                              remote_access=False)

    @property
    def pid(self) -> int:
        process = self.orthanc._process  # the test needs the real process to signal it
        assert process is not None
        return process.pid

    def kill(self) -> None:
        process = self.orthanc._process
        assert process is not None
        process.kill()  # SIGKILL
        process.wait(timeout=10)
        self.orthanc.stop()

    def replace(self, delay_s: float = TAKEOVER_DELAY_S) -> None:
        """Kill -9, wait, start a new Orthanc on the same ports and storage (what a takeover looks like)."""
        self.kill()
        time.sleep(delay_s)
        self.orthanc = self._new().start()

    def fail_over(self) -> None:
        """Kill -9 now (the transfer breaks at once, whatever is still buffered), restart in the background."""
        self.kill()

        def restart() -> None:
            time.sleep(TAKEOVER_DELAY_S)
            self.orthanc = self._new().start()

        self.in_background(restart)

    def in_background(self, action: Callable[[], None]) -> None:
        thread = threading.Thread(target=action, name="test.takeover", daemon=True)
        self._threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(60)
        self._threads.clear()

    def ensure_running(self) -> None:
        self.join()
        if not self.orthanc.running:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except (AssertionError, ProcessLookupError):
                pass
            self.orthanc = self._new().start()

    def profile(self, **kw: object) -> ClusterProfile:
        vip = ClusterAddress("127.0.0.1", self.dicom_port, dicomweb_url=f"http://127.0.0.1:{self.http_port}/dicom-web")
        return ClusterProfile(name="test", vip=vip, ae_title=AET, calling_ae=CALLING_AE,
                              transports=kw.pop("transports", ("dimse", "dicomweb")),  # type: ignore[arg-type]
                              timeouts=FAST, retry=kw.pop("retry", POLICY), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def source() -> dict[str, bytes]:
    """300 CT instances of one series (256x256, 128 KiB each: 39 MB, more than loopback socket buffers hold, so
    that killing the sender really cuts a transfer): SOP Instance UID -> Part 10 bytes."""
    return {str(ds.SOPInstanceUID): part10(ds) for ds in ct_series(COUNT, rows=256, columns=256, seed=7)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, source: dict[str, bytes]) -> Iterator[Cluster]:
    require(ORTHANC_BINARY.exists(), "Orthanc is not installed (apt-get install orthanc)")
    require(DICOMWEB_PLUGIN.exists(), "the Orthanc DICOMweb plugin is not installed")
    cluster = Cluster(tmp_path_factory.mktemp("ha-orthanc"))
    try:
        for data in source.values():
            cluster.orthanc.upload_bytes(data)
        yield cluster
    finally:
        cluster.join()
        try:
            os.kill(cluster.pid, signal.SIGCONT)
        except (AssertionError, ProcessLookupError):
            pass
        cluster.orthanc.stop()


@pytest.fixture
def healthy(cluster: Cluster) -> Iterator[Cluster]:
    cluster.ensure_running()
    yield cluster
    cluster.ensure_running()


def first_uid(source: dict[str, bytes]) -> tuple[str, str]:
    header = pydicom.dcmread(io.BytesIO(next(iter(source.values()))), stop_before_pixels=True)
    return str(header.StudyInstanceUID), str(header.SeriesInstanceUID)


def assert_library_matches(library: Library, source: dict[str, bytes], series_uid: str) -> None:
    """Every source instance is held once, byte-identical, its file intact; nothing partial, nothing extra."""
    records = library.instances(series_uid)
    assert sorted(r.sop_instance_uid for r in records) == sorted(source)  # no duplicates, none missing
    for record in records:
        data = record.path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == record.sha256
        assert dataset_digest(data) == dataset_digest(source[record.sop_instance_uid])
    assert library.fsck() == {"orphans_removed": 0, "missing": 0}
    assert library.partial_files() == []


def at_count(count: int, action: Callable[[], None]) -> Callable[[int, int | None], None]:
    """A progress callback that runs `action` once when `count` images are here."""
    fired = threading.Event()

    def progress(done: int, total: int | None) -> None:
        if done >= count and not fired.is_set():
            fired.set()
            action()

    return progress


def test_c_get_resumes_after_kill_and_takeover(healthy: Cluster, source: dict[str, bytes], tmp_path: Path) -> None:
    study_uid, series_uid = first_uid(source)
    events: list[RetryEvent] = []
    log = EventLog()
    with Library.open(tmp_path / "lib") as library:
        client = ResilientClient(healthy.profile(), library, on_event=lambda e: (events.append(e), log.record(e)))
        outcome = client.retrieve(study_uid, progress=at_count(100, healthy.fail_over))
        healthy.join()
        assert outcome.complete, outcome.describe()
        assert_library_matches(library, source, series_uid)
    failed = [e for e in events if isinstance(e, AttemptFailed)]
    resumed = [e for e in events if isinstance(e, Resumed)]
    assert failed and all(e.transient for e in failed)
    assert len(resumed) == 1 and resumed[0].total == COUNT and 100 <= (resumed[0].done or 0) < COUNT
    # after the interruption only what was missing was asked for again: nothing arrived twice
    assert outcome.result.completed == COUNT
    assert any("stopped answering" in s for s in log.sentences())
    assert any("images were already here" in s and "resumed through the virtual IP" in s for s in log.sentences())


def test_c_get_resumes_after_the_node_froze(healthy: Cluster, source: dict[str, bytes], tmp_path: Path) -> None:
    """SIGSTOP: the connection stays open but nothing moves; the idle timeout (not a transfer deadline) fires,
    and the retrieval resumes when the node thaws."""
    study_uid, series_uid = first_uid(source)
    events: list[RetryEvent] = []

    def freeze_then_thaw() -> None:
        os.kill(healthy.pid, signal.SIGSTOP)
        time.sleep(FAST.dimse_s + 2)
        os.kill(healthy.pid, signal.SIGCONT)

    with Library.open(tmp_path / "lib") as library:
        client = ResilientClient(healthy.profile(), library, on_event=events.append)
        outcome = client.retrieve(study_uid, series_uid,
                                  progress=at_count(120, lambda: healthy.in_background(freeze_then_thaw)))
        healthy.join()
        assert outcome.complete, outcome.describe()
        assert_library_matches(library, source, series_uid)
    kinds = {e.kind for e in events if isinstance(e, AttemptFailed)}
    assert "timeout" in kinds  # the silence was noticed by the idle timeout
    assert any(isinstance(e, Resumed) for e in events)


def test_wado_resumes_after_kill_and_takeover(healthy: Cluster, source: dict[str, bytes], tmp_path: Path) -> None:
    study_uid, series_uid = first_uid(source)
    events: list[RetryEvent] = []
    profile = healthy.profile(transports=("dicomweb",), preferred="wado", fallbacks=())
    with Library.open(tmp_path / "lib") as library:
        client = ResilientClient(profile, library, on_event=events.append)
        # Killed at 20 stored, not 100: progress counts committed instances, and the reader runs ahead of the
        # commits by up to UNFINISHED_MAX (96) instances, plus what the loopback socket buffers hold (~10 MB, 80
        # instances).  At 100 (276 of 300 possibly read) a loaded machine could receive the whole series before
        # the kill, and nothing would be cut; at 20, at most 196 can have arrived.
        outcome = client.retrieve(study_uid, series_uid,
                                  progress=at_count(20, healthy.fail_over))
        healthy.join()
        assert outcome.complete, outcome.describe()
        assert outcome.series[0].method == "wado"
        assert_library_matches(library, source, series_uid)
    assert any(isinstance(e, Resumed) for e in events)


def test_queries_in_a_loop_survive_a_takeover(healthy: Cluster, source: dict[str, bytes]) -> None:
    study_uid, series_uid = first_uid(source)
    events: list[RetryEvent] = []
    client = ResilientClient(healthy.profile(), on_event=events.append)
    answers = []
    for index in range(12):
        if index == 3:
            healthy.in_background(healthy.replace)
        rows = client.find("image", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid})
        answers.append(sorted(r["SOPInstanceUID"] for r in rows))
        time.sleep(0.3)
    healthy.join()
    assert all(a == sorted(source) for a in answers)  # every query whole, none partial
    assert any(isinstance(e, AttemptFailed) for e in events) and any(isinstance(e, Resumed) for e in events)


def test_c_store_resumes_and_every_acknowledged_instance_is_there(healthy: Cluster, tmp_path: Path) -> None:
    sent = {str(ds.SOPInstanceUID): part10(ds) for ds in ct_series(100, rows=128, columns=128, seed=11)}
    study_uid, series_uid = first_uid(sent)
    events: list[RetryEvent] = []
    client = ResilientClient(healthy.profile(), on_event=events.append)
    outcome = client.store(list(sent.values()),
                           progress=at_count(30, healthy.fail_over))
    healthy.join()
    assert not outcome.error and not outcome.refused
    assert sorted(outcome.stored) == sorted(sent)
    assert len(set(outcome.stored)) == len(outcome.stored)
    assert any(isinstance(e, Resumed) for e in events)
    rows = client.find("image", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid})
    assert sorted(r["SOPInstanceUID"] for r in rows) == sorted(sent)  # present on the node that took over
    # byte identity on the PACS side: fetch them back
    with Library.open(tmp_path / "lib") as library:
        assert ResilientClient(healthy.profile(), library).retrieve(study_uid).complete
        assert_library_matches(library, sent, series_uid)


def test_both_down_past_the_budget_is_a_clear_error(healthy: Cluster, source: dict[str, bytes],
                                                   tmp_path: Path) -> None:
    study_uid, series_uid = first_uid(source)
    dead = ClusterProfile(name="dead", vip=ClusterAddress("127.0.0.1", free_port()),
                          members=(ClusterAddress("127.0.0.1", free_port(), name="node A"),
                                   ClusterAddress("127.0.0.1", free_port(), name="node B")),
                          ae_title=AET, calling_ae=CALLING_AE, timeouts=FAST,
                          retry=RetryPolicy(budget_s=3, backoff_initial_s=0.2, backoff_max_s=0.5))
    events: list[RetryEvent] = []
    with Library.open(tmp_path / "lib") as library:
        # nothing can even list the study: that stops the retrieval with the reason
        with pytest.raises(NodeUnreachableError, match=r"Gave up the C-FIND after \d+ attempt"):
            ResilientClient(dead, library, on_event=events.append).retrieve(study_uid)
        assert isinstance(events[-1], GaveUp)
        # the VIP was tried; after that no address of the three answered a connect for the rest of the budget,
        # so no attempt was wasted on them (viewer.pacs.reach probes them all at once)
        failed = [e for e in events if isinstance(e, AttemptFailed)]
        assert {e.node for e in failed} == {"virtual IP"} and {e.kind for e in failed} == {"unreachable"}

        # mid-transfer: the node dies for good; what arrived is kept, whole; the rest is reported, not hung on
        short = healthy.profile(retry=RetryPolicy(budget_s=3, backoff_initial_s=0.2, backoff_max_s=0.5))
        outcome = ResilientClient(short, library).retrieve(
            study_uid, progress=at_count(80, lambda: healthy.in_background(healthy.kill)))
        healthy.join()
        assert not outcome.complete and re.search(r"Gave up the C-GET after \d+ attempt", outcome.series[0].error)
        held = library.instances(series_uid)
        assert 80 <= len(held) < COUNT
        for record in held:
            assert dataset_digest(record.path.read_bytes()) == dataset_digest(source[record.sop_instance_uid])
        assert library.fsck() == {"orphans_removed": 0, "missing": 0}


def test_node_that_accepts_the_association_and_never_answers(healthy: Cluster, source: dict[str, bytes]) -> None:
    """The VIP answers the association but never the C-FIND: the silence timeout fires and a member serves."""
    study_uid, series_uid = first_uid(source)
    release = threading.Event()
    ae = AE(ae_title=AET)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)

    def never(event: object) -> Iterator[tuple[int, None]]:
        release.wait(30)
        yield 0xC000, None

    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, never)])
    try:
        profile = ClusterProfile(
            name="half", vip=ClusterAddress("127.0.0.1", server.server_address[1]),
            members=(ClusterAddress("127.0.0.1", healthy.dicom_port, name="node B"),), ae_title=AET,
            calling_ae=CALLING_AE, timeouts=FAST, retry=POLICY)
        events: list[RetryEvent] = []
        rows = ResilientClient(profile, on_event=events.append).find(
            "image", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid})
        assert sorted(r["SOPInstanceUID"] for r in rows) == sorted(source)
        failed = [e for e in events if isinstance(e, AttemptFailed)]
        assert [(e.node, e.kind) for e in failed] == [("virtual IP", "timeout")]
        assert [e.node for e in events if isinstance(e, Resumed)] == ["node B"]
    finally:
        release.set()
        server.shutdown()


def test_an_instance_not_asked_for_is_refused_and_reported(tmp_path: Path) -> None:
    """A C-GET SCP (pynetdicom, ours) that slips an extra instance into the answer."""
    wanted = {str(ds.SOPInstanceUID): ds for ds in ct_series(4, seed=21)}
    study_uid = next(iter(wanted.values())).StudyInstanceUID
    series_uid = next(iter(wanted.values())).SeriesInstanceUID
    extra = ct_series(1, seed=22, study_uid=study_uid, series_uid=series_uid)[0]
    ae = AE(ae_title="ROGUE")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    for context in StoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scp_role=True, scu_role=False)

    def on_find(event: object) -> Iterator[tuple[int, object]]:
        level = event.identifier.QueryRetrieveLevel  # type: ignore[attr-defined]
        if level == "SERIES":
            match = pydicom.Dataset()
            match.QueryRetrieveLevel, match.StudyInstanceUID, match.SeriesInstanceUID = level, study_uid, series_uid
            yield 0xFF00, match
            return
        for uid, ds in wanted.items():
            match = pydicom.Dataset()
            match.QueryRetrieveLevel = "IMAGE"
            match.StudyInstanceUID, match.SeriesInstanceUID = study_uid, series_uid
            match.SOPInstanceUID, match.SOPClassUID, match.InstanceNumber = uid, ds.SOPClassUID, ds.InstanceNumber
            yield 0xFF00, match

    def on_get(event: object) -> Iterator[object]:
        asked = event.identifier.SOPInstanceUID  # type: ignore[attr-defined]
        asked = [asked] if isinstance(asked, str) else list(asked)
        yield len(asked) + 1
        yield 0xFF00, extra
        for uid in asked:
            yield 0xFF00, wanted[uid]

    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get)])
    try:
        profile = ClusterProfile(name="rogue", vip=ClusterAddress("127.0.0.1", server.server_address[1]),
                                 ae_title="ROGUE", calling_ae=CALLING_AE, timeouts=FAST, fallbacks=(), retry=POLICY)
        events: list[RetryEvent] = []
        log = EventLog()
        with Library.open(tmp_path / "lib") as library:
            outcome = ResilientClient(profile, library, on_event=lambda e: (events.append(e), log.record(e))
                                      ).retrieve(study_uid, series_uid)
            assert outcome.complete, outcome.describe()
            assert library.instance_uids(series_uid) == set(wanted)
            assert not library.has_instance(extra.SOPInstanceUID)
        assert outcome.unrequested == (extra.SOPInstanceUID,)
        assert [e.sop_instance_uid for e in events if isinstance(e, UnrequestedInstance)] == [extra.SOPInstanceUID]
        assert any("was not asked for" in s and extra.SOPInstanceUID in s for s in log.sentences())
    finally:
        server.shutdown()


def test_an_interrupted_job_resumes_after_a_restart(healthy: Cluster, source: dict[str, bytes],
                                                   tmp_path: Path) -> None:
    study_uid, series_uid = first_uid(source)
    cancel = threading.Event()
    with Library.open(tmp_path / "lib") as library:
        jobs = JobStore(library)
        job_id = jobs.add(study_uid, None, "test")
        client = ResilientClient(healthy.profile(), library)
        original = client.retrieve

        def retrieve_and_stop(*args: object, **kwargs: object):  # the viewer is closed mid-transfer
            kwargs["progress"] = at_count(60, cancel.set)
            return original(*args, **kwargs)  # type: ignore[arg-type]

        client.retrieve = retrieve_and_stop  # type: ignore[method-assign]
        with pytest.raises(OperationCancelled):
            run_job(client, jobs, jobs.get(job_id), cancel)
        assert jobs.get(job_id).state == "pending"
        held_before = len(library.instance_uids(series_uid))
        assert 0 < held_before < COUNT
        jobs.close()

    with Library.open(tmp_path / "lib") as library:  # the next start
        jobs = JobStore(library)
        assert [j.job_id for j in jobs.pending()] == [job_id]
        results = resume_pending(ResilientClient(healthy.profile(), library), jobs)
        assert len(results) == 1 and results[0][1] is not None and results[0][1].complete
        job = jobs.get(job_id)
        assert (job.state, job.received, job.expected) == ("done", COUNT, COUNT)
        assert results[0][1].result.skipped_already_held == held_before
        assert jobs.pending() == []
        assert_library_matches(library, source, series_uid)
        jobs.close()


def test_falls_back_to_c_move_when_c_get_is_refused(tmp_path: Path) -> None:
    """Orthanc that knows us but does not allow us C-GET (it aborts the association): C-MOVE is used."""
    require(ORTHANC_BINARY.exists(), "Orthanc is not installed (apt-get install orthanc)")
    move_port = free_port()
    series = {str(ds.SOPInstanceUID): part10(ds) for ds in ct_series(40, seed=31)}
    study_uid, series_uid = first_uid(series)
    known = {"mifas": {"AET": CALLING_AE, "Host": "127.0.0.1", "Port": move_port, "AllowGet": False}}
    with OrthancProcess(tmp_path / "orthanc", aet=AET, always_allow=False, remote_access=False,
                        extra_config={"DicomModalities": known, "DicomAlwaysAllowFind": True}) as orthanc:
        for data in series.values():
            orthanc.upload_bytes(data)
        profile = ClusterProfile(name="no-get", vip=ClusterAddress("127.0.0.1", orthanc.dicom_port), ae_title=AET,
                                 calling_ae=CALLING_AE, timeouts=FAST, retry=POLICY, preferred="get",
                                 fallbacks=("move",), move_port=move_port)
        events: list[RetryEvent] = []
        with Library.open(tmp_path / "lib") as library:
            outcome = ResilientClient(profile, library, on_event=events.append).retrieve(study_uid)
            assert outcome.complete, outcome.describe()
            assert outcome.series[0].method == "move"
            assert_library_matches(library, series, series_uid)
    fell_back = [e for e in events if isinstance(e, FellBack)]
    assert [(e.from_method, e.to_method) for e in fell_back] == [("get", "move")]


def test_a_version_1_library_upgrades_and_keeps_its_images(tmp_path: Path, source: dict[str, bytes]) -> None:
    import sqlite3

    root = tmp_path / "lib"
    with Library.open(root) as library:
        stored = library.store_bytes(next(iter(source.values())))
    db = sqlite3.connect(root / "index.sqlite")  # make it what MIFAS Viewer 1 left: no job table, version 1
    db.executescript("DROP TABLE jobs; PRAGMA user_version=1;")
    db.close()
    with Library.open(root) as library:
        assert library.has_instance(stored.sop_instance_uid)
        jobs = JobStore(library)
        job_id = jobs.add(stored.study_instance_uid, None, "test")
        assert jobs.add(stored.study_instance_uid, None, "test") == job_id  # an unfinished job is reused
        jobs.mark_failed(job_id, "the budget ran out")
        assert jobs.get(job_id).state == "failed" and jobs.pending() == []
        jobs.close()
        assert library._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _image_match(uid: str, study_uid: str, series_uid: str) -> pydicom.Dataset:
    match = pydicom.Dataset()
    match.QueryRetrieveLevel = "IMAGE"
    match.StudyInstanceUID, match.SeriesInstanceUID, match.SOPInstanceUID = study_uid, series_uid, uid
    return match


def test_one_failing_series_does_not_block_the_others(tmp_path: Path) -> None:
    """A C-GET SCP (ours) that refuses every C-GET of one series with a failure status."""
    study_uid = pydicom.uid.generate_uid()
    broken = {str(ds.SOPInstanceUID): ds for ds in ct_series(3, seed=41, study_uid=study_uid)}
    fine = {str(ds.SOPInstanceUID): ds for ds in ct_series(3, seed=42, study_uid=study_uid)}
    by_series = {next(iter(d.values())).SeriesInstanceUID: d for d in (broken, fine)}
    broken_series = next(iter(broken.values())).SeriesInstanceUID
    ae = AE(ae_title="HALF")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    for context in StoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scp_role=True, scu_role=False)

    def on_find(event: object) -> Iterator[tuple[int, object]]:
        identifier = event.identifier  # type: ignore[attr-defined]
        if identifier.QueryRetrieveLevel == "SERIES":
            for series_uid in by_series:
                match = pydicom.Dataset()
                match.QueryRetrieveLevel, match.StudyInstanceUID = "SERIES", study_uid
                match.SeriesInstanceUID = series_uid
                yield 0xFF00, match
            return
        for uid in by_series[identifier.SeriesInstanceUID]:
            yield 0xFF00, _image_match(uid, study_uid, identifier.SeriesInstanceUID)

    def on_get(event: object) -> Iterator[object]:
        identifier = event.identifier  # type: ignore[attr-defined]
        asked = identifier.SOPInstanceUID
        asked = [asked] if isinstance(asked, str) else list(asked)
        yield len(asked)
        if identifier.SeriesInstanceUID == broken_series:
            yield 0xC000, None  # unable to process: a refusal, not worth retrying
            return
        for uid in asked:
            yield 0xFF00, fine[uid]

    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get)])
    try:
        profile = ClusterProfile(name="half", vip=ClusterAddress("127.0.0.1", server.server_address[1]),
                                 ae_title="HALF", calling_ae=CALLING_AE, timeouts=FAST, fallbacks=(), retry=POLICY)
        events: list[RetryEvent] = []
        with Library.open(tmp_path / "lib") as library:
            outcome = ResilientClient(profile, library, on_event=events.append).retrieve(study_uid)
            assert library.instance_uids(next(iter(fine.values())).SeriesInstanceUID) == set(fine)
            assert library.instance_uids(broken_series) == set()
        results = {s.series_uid: s for s in outcome.series}
        assert results[broken_series].error and "0xC000" in results[broken_series].error
        assert [s.complete for s in outcome.series] == [s.series_uid != broken_series for s in outcome.series]
        refusals = [e for e in events if isinstance(e, AttemptFailed)]
        assert len(refusals) == 1 and not refusals[0].transient  # reported at once, not hammered
    finally:
        server.shutdown()


def test_c_store_whose_answer_was_lost_is_verified_not_blindly_resent(tmp_path: Path) -> None:
    """A Storage SCP (ours) that keeps the 5th instance and then drops the association before answering."""
    sent = {str(ds.SOPInstanceUID): part10(ds) for ds in ct_series(8, seed=51)}
    study_uid, series_uid = first_uid(sent)
    order = list(sent)
    held: dict[str, int] = {}  # UID -> times received
    ae = AE(ae_title="LOSSY")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    for context in StoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)

    def on_store(event: object) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)  # type: ignore[attr-defined]
        held[uid] = held.get(uid, 0) + 1
        if uid == order[4] and held[uid] == 1:
            event.assoc.abort()  # type: ignore[attr-defined]  # stored, but the answer never leaves
        return 0x0000

    def on_find(event: object) -> Iterator[tuple[int, object]]:
        uid = str(event.identifier.SOPInstanceUID)  # type: ignore[attr-defined]
        if uid in held:
            yield 0xFF00, _image_match(uid, study_uid, series_uid)

    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_C_FIND, on_find)])
    try:
        profile = ClusterProfile(name="lossy", vip=ClusterAddress("127.0.0.1", server.server_address[1]),
                                 ae_title="LOSSY", calling_ae=CALLING_AE, timeouts=FAST, retry=POLICY)
        events: list[RetryEvent] = []
        outcome = ResilientClient(profile, on_event=events.append).store(list(sent.values()))
        assert not outcome.error and not outcome.refused
        assert outcome.verified == (order[4],)
        assert sorted(outcome.stored) == sorted(sent)
        assert held == dict.fromkeys(sent, 1)  # each received exactly once: nothing re-sent blindly
        assert any(isinstance(e, Resumed) for e in events)
    finally:
        server.shutdown()
