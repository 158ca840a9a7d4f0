"""The retrieval engine (viewer.pacs.retrieve) over deterministic hostile and interrupted peers
(tests/pacs/scripted.py), for every retrieval method (C-GET, C-MOVE, WADO-RS) and both kinds of source (a node
as a cluster of one, a cluster whose virtual IP and member both lead to the peer).

- A peer that slips in an instance nobody asked for (another patient's, or one of the same study): the library
  ends up with exactly the study's instances, byte for byte, and the retrieval names what it refused.
- During a C-MOVE, a third party stores to our Storage SCP (another AE title; the PACS's AE title from another
  address), including forged copies of instances the C-MOVE asked for: refused with 0x0124, nothing kept, the
  retrieval completes.
- A source that lists no instances (the study is fetched whole) still gets only this study.
- WADO-RS answering a series request with another patient's instance in it: refused and named.
- ``mifas-pacs get --library`` killed (SIGKILL) mid-transfer at a known point and run again: it completes,
  fetching only what the first run had not committed; each instance once, byte for byte, nothing partial.

Byte identity: the encoded data set (everything after the File Meta Information) of each library file has the
SHA-256 of the source's (tests.support.dataset_sha256).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from mifaslab.orthanc import free_port
from tests.pacs.conftest import CALLING_AE, ct_series, part10
from tests.pacs.scripted import ScriptedPacs, ScriptedWado, third_party_store
from tests.support import dataset_sha256, require
from viewer.library.store import Library, StudyQuery
from viewer.pacs.cluster import ClusterAddress, ClusterProfile, profile_to_json
from viewer.pacs.node import Node, Timeouts
from viewer.pacs.retrieve import retrieve
from viewer.pacs.retry import RetryPolicy
from viewer.pacs.status import DimseStatus
from viewer.settings import Settings, save_settings

pytestmark = pytest.mark.network

AET = "SCRIPTEDPACS"
FAST = Timeouts(connect_s=2.0, acse_s=5.0, dimse_s=10.0, network_s=20.0)
POLICY = RetryPolicy(budget_s=10.0, backoff_initial_s=0.1, backoff_max_s=0.5)
VIAS = ("get", "move", "wado")
ENTRIES = ("node", "cluster")
COUNT = 30  # instances of the study (32 x 32 pixels)
HOLD_AFTER = 18  # the restart tests kill the first run here; 12 are left (under half the series: see there)
MIFAS_PACS = Path(sys.executable).parent / "mifas-pacs"
NOT_AUTHORIZED = DimseStatus.NOT_AUTHORIZED  # 0x0124, Refused: Not Authorized


def study(count: int = COUNT, seed: int = 41) -> list[Dataset]:
    return ct_series(count, rows=32, columns=32, seed=seed, patient_name="Mine^Patient", patient_id="MINE-1")


def digests(datasets: list[Dataset]) -> dict[str, str]:
    return {str(ds.SOPInstanceUID): dataset_sha256(part10(ds)) for ds in datasets}


class Peers:
    """A ScriptedPacs and a ScriptedWado over the same data sets and knobs, and the source profile for an
    entry ("node" or "cluster") and a method."""

    def __init__(self, stack: ExitStack, datasets: list[Dataset], *, via: str, entry: str, **knobs: object) -> None:
        self.via, self.entry = via, entry
        self.move_port = free_port()
        web_knobs = {k: v for k, v in knobs.items() if k in ("slip", "slip_levels", "hold_after")}
        # The DIMSE peer serves the retrieval for get/move; for wado it may still answer the planning C-FIND.
        dimse_knobs = dict(knobs) if via in ("get", "move") else \
            {k: v for k, v in knobs.items() if k == "answer_image_level"}
        self.pacs = stack.enter_context(ScriptedPacs(
            datasets, ae_title=AET, move_destinations={CALLING_AE: ("127.0.0.1", self.move_port)}, **dimse_knobs))
        self.wado = stack.enter_context(ScriptedWado(datasets, **(web_knobs if via == "wado" else {})))
        if via == "wado" and knobs.get("answer_image_level") is False:
            self.wado.rows = _no_instances(self.wado.rows)  # type: ignore[method-assign]

    @property
    def serving(self) -> ScriptedPacs | ScriptedWado:
        """The peer the retrieval itself talks to."""
        return self.wado if self.via == "wado" else self.pacs

    def profile(self) -> ClusterProfile:
        web = self.wado.url if self.via == "wado" else None
        if self.entry == "node":
            node = Node(name="scripted", ae_title=AET, host="127.0.0.1", port=self.pacs.port, calling_ae=CALLING_AE,
                        dicomweb_url=web, timeouts=FAST)
            return ClusterProfile.of_node(node, self.via, move_port=self.move_port, retry=POLICY)

        def address(name: str) -> ClusterAddress:
            return ClusterAddress("127.0.0.1", self.pacs.port, name=name, ae_title=AET, dicomweb_url=web)

        # A DICOMweb-only cluster plans with QIDO-RS too: the scripted web peer is then the only one it uses.
        return ClusterProfile(name=f"scripted-{self.via}", vip=address("virtual IP"), members=(address("member 1"),),
                              ae_title=AET, calling_ae=CALLING_AE,
                              transports=("dicomweb",) if self.via == "wado" else ("dimse",),
                              preferred=self.via, fallbacks=(), timeouts=FAST, retry=POLICY, move_port=self.move_port)


def _no_instances(rows: Callable[..., list[dict[str, str]]]) -> Callable[..., list[dict[str, str]]]:
    def without_instances(level: str, *args: object, **kwargs: object) -> list[dict[str, str]]:
        return [] if level == "instance" else rows(level, *args, **kwargs)
    return without_instances


@pytest.fixture
def peers() -> Iterator[Callable[..., Peers]]:
    with ExitStack() as stack:
        yield lambda datasets, **kwargs: Peers(stack, datasets, **kwargs)


def library_uids(library: Library) -> list[str]:
    """Every instance the library's index lists (with repeats, were there any)."""
    return [record.sop_instance_uid for record in library.iter_instances()]


def assert_holds_exactly(library: Library, datasets: list[Dataset]) -> None:
    """The library holds exactly these instances, once each, byte for byte, and nothing partial or orphaned."""
    expected = digests(datasets)
    uids = library_uids(library)
    assert sorted(uids) == sorted(expected)
    for uid, digest in expected.items():
        assert dataset_sha256(library.path_of(uid).read_bytes()) == digest, f"instance {uid} differs from the source"
    assert len(list((library.root / "objects").glob("*/*.dcm"))) == len(expected)
    assert library.partial_files() == []
    assert library.fsck() == {"orphans_removed": 0, "missing": 0}


def assert_only_our_study(library: Library, datasets: list[Dataset], *strangers: Dataset) -> None:
    study_uid = str(datasets[0].StudyInstanceUID)
    assert [s.study_uid for s in library.studies()] == [study_uid]
    assert [s.study_uid for s in library.studies(StudyQuery(patient_id=str(datasets[0].PatientID)))] == [study_uid]
    for stranger in strangers:
        assert not library.has_instance(str(stranger.SOPInstanceUID))
        if str(stranger.PatientID) != str(datasets[0].PatientID):
            assert library.studies(StudyQuery(patient_id=str(stranger.PatientID))) == []
            assert library.studies(StudyQuery(patient_name=str(stranger.PatientName))) == []


# -- slipped instances ------------------------------------------------------------------------------------------


def hostile_slips(mine: list[Dataset]) -> tuple[Dataset, Dataset]:
    """An instance of another patient (another study), and one of our study and series nobody listed."""
    other = ct_series(1, rows=32, columns=32, seed=42, patient_name="Other^Patient", patient_id="OTHER-9")[0]
    unlisted = ct_series(1, rows=32, columns=32, seed=43, study_uid=str(mine[0].StudyInstanceUID),
                         series_uid=str(mine[0].SeriesInstanceUID), patient_name="Mine^Patient",
                         patient_id="MINE-1")[0]
    return other, unlisted


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("via", VIAS)
def test_slipped_instances_are_refused_and_reported(peers: Callable[..., Peers], tmp_path: Path, via: str,
                                                    entry: str) -> None:
    mine = study()
    other, unlisted = hostile_slips(mine)
    source = peers(mine, via=via, entry=entry, slip=[other, unlisted])
    with Library.open(tmp_path / "library") as library:
        result = retrieve(source.profile(), str(mine[0].StudyInstanceUID), library=library)
        assert result.complete, result.describe()
        assert_holds_exactly(library, mine)
        assert_only_our_study(library, mine, other, unlisted)
    slipped = {str(other.SOPInstanceUID), str(unlisted.SOPInstanceUID)}
    assert set(result.unrequested) == slipped
    assert f"{len(result.unrequested)} image(s) sent without being asked for were refused" in result.describe()
    if via != "wado":  # what our side answered the PACS for each C-STORE sub-operation
        statuses = source.pacs.store_status
        assert set(statuses[str(other.SOPInstanceUID)]) == {NOT_AUTHORIZED}  # another study: refused on arrival
        unlisted_answers = set(statuses[str(unlisted.SOPInstanceUID)])
        if via == "get":
            # The library held none of the study, so the engine asked for it whole while listing it (the first
            # pass): an instance of the study that came before the listing was acknowledged, then refused when
            # the listing did not name it (never stored, and reported: asserted above); after it, refused on
            # arrival.
            assert unlisted_answers and unlisted_answers <= {NOT_AUTHORIZED, DimseStatus.SUCCESS}
        else:
            assert unlisted_answers == {NOT_AUTHORIZED}
        # ours: acknowledged (a first/middle/last may come twice, once beside the first pass: both acknowledged)
        assert all(set(statuses[str(ds.SOPInstanceUID)]) == {DimseStatus.SUCCESS} for ds in mine)


@pytest.mark.parametrize("entry", ENTRIES)
def test_wado_series_answer_with_another_patient_is_reported(peers: Callable[..., Peers], tmp_path: Path,
                                                             entry: str) -> None:
    """WADO-RS fetches most of a series with one series request (viewer.pacs.dicomweb): another patient's
    instance slipped into that answer must still be refused and named, as it is in an instance answer."""
    mine = study()
    other, _ = hostile_slips(mine)
    source = peers(mine, via="wado", entry=entry, slip=[other], slip_levels=("series",))
    with Library.open(tmp_path / "library") as library:
        result = retrieve(source.profile(), str(mine[0].StudyInstanceUID), library=library)
        assert result.complete, result.describe()
        assert_holds_exactly(library, mine)
        assert_only_our_study(library, mine, other)
    assert result.unrequested == (str(other.SOPInstanceUID),)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("via", VIAS)
def test_whole_study_retrieval_refuses_another_patient(peers: Callable[..., Peers], tmp_path: Path, via: str,
                                                       entry: str) -> None:
    """A source that lists no instances: the study is fetched whole, and still only this study is kept."""
    mine = study()
    other, _ = hostile_slips(mine)
    source = peers(mine, via=via, entry=entry, slip=[other], answer_image_level=False)
    with Library.open(tmp_path / "library") as library:
        result = retrieve(source.profile(), str(mine[0].StudyInstanceUID), library=library)
        assert_holds_exactly(library, mine)
        assert_only_our_study(library, mine, other)
    assert result.unrequested == (str(other.SOPInstanceUID),)
    assert result.held == COUNT


@pytest.mark.parametrize("entry", ENTRIES)
def test_third_party_stores_during_a_move_are_refused(peers: Callable[..., Peers], tmp_path: Path,
                                                      entry: str) -> None:
    """While our C-MOVE runs, strangers store to our Storage SCP: one with another AE title from the PACS's
    address, one with the PACS's own AE title from another address.  Each also sends a forged copy of an instance
    the C-MOVE asked for (so only the SCP's check of who is calling can refuse it).  All are refused with
    0x0124; the library holds the PACS's instances, byte for byte."""
    mine = study()
    other, _ = hostile_slips(mine)
    forged = ct_series(1, rows=32, columns=32, seed=44, study_uid=str(mine[0].StudyInstanceUID),
                       series_uid=str(mine[0].SeriesInstanceUID), patient_name="Forged^Patient",
                       patient_id="FORGED-1")[0]
    forged.SOPInstanceUID = mine[0].SOPInstanceUID  # the same UID as an instance asked for, other content
    forged.file_meta.MediaStorageSOPInstanceUID = mine[0].SOPInstanceUID
    answers: dict[str, list[int]] = {}
    source = peers(mine, via="move", entry=entry)

    def strangers() -> None:
        answers["other AE"] = third_party_store(source.move_port, [forged, other], calling_ae="INTRUDER")
        answers["other address"] = third_party_store(source.move_port, [forged, other], calling_ae=AET,
                                                     source_address="127.0.0.2")

    source.pacs.before_move = strangers
    with Library.open(tmp_path / "library") as library:
        result = retrieve(source.profile(), str(mine[0].StudyInstanceUID), library=library)
        assert result.complete, result.describe()
        assert_holds_exactly(library, mine)
        assert_only_our_study(library, mine, other)
    assert answers == {"other AE": [NOT_AUTHORIZED, NOT_AUTHORIZED],
                       "other address": [NOT_AUTHORIZED, NOT_AUTHORIZED]}
    assert str(other.SOPInstanceUID) in result.unrequested


# -- the process killed mid-job ---------------------------------------------------------------------------------


def get_command(source: Peers, study_uid: str, library_dir: Path, config_dir: Path) -> list[str]:
    """`mifas-pacs get` for this source: --node with the method's options, or --cluster with a profile file."""
    if source.entry == "cluster":
        profiles = config_dir / "clusters.json"
        profiles.write_text(json.dumps({"profiles": [profile_to_json(source.profile())]}), encoding="utf-8")
        return [str(MIFAS_PACS), "get", "--cluster", source.profile().name, "--profiles", str(profiles),
                "--study", study_uid, "--library", str(library_dir)]
    settings = config_dir / "settings.json"
    save_settings(Settings(calling_ae=CALLING_AE), settings)
    command = [str(MIFAS_PACS), "get", "--config", str(settings), "--node", f"{AET}@127.0.0.1:{source.pacs.port}",
               "--calling-ae", CALLING_AE, "--study", study_uid, "--library", str(library_dir), "--via", source.via,
               "--timeout", "10"]
    if source.via == "move":
        command += ["--port", str(source.move_port)]
    if source.via == "wado":
        command += ["--dicomweb", source.wado.url]
    return command


def committed(library_dir: Path) -> int:
    """Instances the library's index lists, read without opening the Library (another process writes it)."""
    index = library_dir / "index.sqlite"
    if not index.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM instances").fetchone()[0])
    except sqlite3.Error:  # the schema is not there yet
        return 0


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `condition` (bounded): the command under test runs in another process."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("via", VIAS)
def test_killed_mid_job_resumes_with_what_is_missing(peers: Callable[..., Peers], tmp_path: Path, via: str,
                                                     entry: str) -> None:
    require(MIFAS_PACS.exists(), "mifas-pacs is not installed in the virtualenv (bash packaging/test.sh)")
    mine = study()
    study_uid = str(mine[0].StudyInstanceUID)
    source = peers(mine, via=via, entry=entry, hold_after=HOLD_AFTER)
    library_dir, config_dir = tmp_path / "library", tmp_path / "config"
    config_dir.mkdir()
    command = get_command(source, study_uid, library_dir, config_dir)
    env = {**os.environ, "MIFAS_CONFIG_DIR": str(config_dir), "TCP_NODELAY": "1"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: source.serving.holding.is_set() and committed(library_dir) >= HOLD_AFTER, 30), \
            "the first run never reached the hold"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert first.returncode == -signal.SIGKILL
    held_first = committed(library_dir)
    assert held_first == HOLD_AFTER  # the group writer committed what was acknowledged before the hold
    with Library.open(library_dir) as library:
        already = set(library_uids(library))
    requested_before = len(source.serving.requested)
    source.serving.hold_after = None
    source.serving.release.set()
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert f"{COUNT} of {COUNT} images are here ({COUNT - held_first} received, {held_first} already in the " \
           "library)" in second.stdout
    asked_again = set(source.serving.requested[requested_before:])
    assert asked_again == set(digests(mine)) - already  # only what the first run had not committed
    with Library.open(library_dir) as library:
        assert_holds_exactly(library, mine)
