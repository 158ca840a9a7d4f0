"""DCMTK as an independent second implementation: dcmqrscp as a second PACS for our client, and getscu as a
second client that must receive from Orthanc byte for byte what we receive."""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from mifaslab.orthanc import OrthancProcess, free_port
from tests.pacs.conftest import CALLING_AE, DCMTK_ENV, Seed, dcmtk
from tests.pacs.test_conformance import Collector, assert_same_instance
from viewer.errors import MifasError
from viewer.library import Library
from viewer.pacs import ClusterProfile, DimseClient
from viewer.pacs.node import Node, Timeouts
from viewer.pacs.retrieve import retrieve

pytestmark = pytest.mark.network

DCMQR_AE = "DCMQR"
STARTUP_S = 10.0


def data_set_bytes(part10: bytes) -> bytes:
    """The encoded data set after the file meta information (PS3.10 7.1: its length is in (0002,0000))."""
    assert part10[128:132] == b"DICM" and part10[132:136] == b"\x02\x00\x00\x00"
    meta_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + meta_length:]


@pytest.fixture(scope="module")
def dcmqrscp(tmp_path_factory: pytest.TempPathFactory, seed_data: Seed) -> Iterator[Node]:
    """dcmqrscp on a free port, its database filled by DCMTK's storescu with the two-series study."""
    server, storescu = dcmtk("dcmqrscp"), dcmtk("storescu")
    root = tmp_path_factory.mktemp("dcmqrscp")
    (root / "db").mkdir()
    port = free_port()
    config = root / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 65536\nMaxAssociations = 16\n"
        "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\n{DCMQR_AE} {root / 'db'} RW (100, 1024mb) ANY\nAETable END\n"
    )
    log = open(root / "dcmqrscp.log", "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen([server, "-c", str(config)], env=DCMTK_ENV, stdout=log, stderr=subprocess.STDOUT)
    node = Node("dcmqrscp", DCMQR_AE, "127.0.0.1", port, calling_ae=CALLING_AE,
                timeouts=Timeouts(connect_s=1, acse_s=5, dimse_s=10, network_s=20))
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                DimseClient(node).echo()
                break
            except MifasError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        files = []
        for uid in sorted(seed_data.instances_of(seed_data.two_series_study)):
            path = root / f"{uid}.dcm"
            path.write_bytes(seed_data.files[uid])
            files.append(str(path))
        subprocess.run([storescu, "-aet", CALLING_AE, "-aec", DCMQR_AE, "127.0.0.1", str(port), *files],
                       env=DCMTK_ENV, check=True, capture_output=True, timeout=30)
        yield node
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_dcmqrscp_echo_and_find(dcmqrscp: Node, seed_data: Seed) -> None:
    client = DimseClient(dcmqrscp)
    assert client.echo() >= 0
    studies = client.find("study", {"PatientName": "Other*"})
    assert [s["StudyInstanceUID"] for s in studies] == [seed_data.two_series_study]
    assert studies[0]["PatientID"] == "MIFAS-T2"
    series = client.find("series", {"StudyInstanceUID": seed_data.two_series_study})
    assert {s["SeriesInstanceUID"] for s in series} == set(seed_data.two_series)
    images = client.find("image", {"StudyInstanceUID": seed_data.two_series_study,
                                   "SeriesInstanceUID": seed_data.two_series[0]})
    assert len(images) == 5 and sorted(int(i["InstanceNumber"]) for i in images) == [1, 2, 3, 4, 5]


def test_dcmqrscp_get(dcmqrscp: Node, seed_data: Seed) -> None:
    client = DimseClient(dcmqrscp)
    sink = Collector()
    result = client.get(seed_data.two_series_study, sink=sink)
    assert result.completed == 10 and result.failed == 0
    for data in sink.items:
        assert_same_instance(data, seed_data.files[pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID])
    images = client.find("image", {"StudyInstanceUID": seed_data.two_series_study,
                                   "SeriesInstanceUID": seed_data.two_series[1]})
    wanted = sorted(i["SOPInstanceUID"] for i in images)[1:3]
    listed = Collector()
    client.get(seed_data.two_series_study, seed_data.two_series[1], wanted, sink=listed)
    assert sorted(listed.uids()) == wanted


def test_dcmqrscp_into_library(dcmqrscp: Node, seed_data: Seed, tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib") as library:
        outcome = retrieve(ClusterProfile.of_node(dcmqrscp), seed_data.two_series_study, library=library)
        assert outcome.complete and outcome.result.completed == 10
        for series_uid in seed_data.two_series:
            for record in library.instances(series_uid):
                assert_same_instance(record.path.read_bytes(), seed_data.files[record.sop_instance_uid])


def test_getscu_receives_the_same_bytes_from_orthanc(orthanc: OrthancProcess, node: Node, seed_data: Seed,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "getscu"
    out.mkdir()
    subprocess.run(
        [dcmtk("getscu"), "-S", "-aet", CALLING_AE, "-aec", orthanc.aet, "127.0.0.1", str(orthanc.dicom_port),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={seed_data.ct_study}", "-od", str(out)],
        env=DCMTK_ENV, check=True, capture_output=True, timeout=60,
    )
    theirs = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.read_bytes() for p in out.iterdir()}
    ours = Collector()
    DimseClient(node).get(seed_data.ct_study, sink=ours)
    assert len(theirs) == len(ours.items) == 31
    for data in ours.items:
        uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        assert data_set_bytes(data) == data_set_bytes(theirs[uid])
