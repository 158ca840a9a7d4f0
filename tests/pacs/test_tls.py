"""DICOM over TLS (viewer.pacs.tls) against real peers: an Orthanc that speaks only DICOM TLS and requires our
client certificate (C-ECHO, C-FIND both ways, C-GET, C-MOVE into our TLS Storage SCP, C-STORE), and DCMTK's
storescp with +tls presenting the certificates a hospital gets wrong (expired, for another host, signed by an
unknown CA).  Each problem must come out as its own sentence, marked not transient, on both DIMSE stacks (the
lean socket and pynetdicom's)."""

from __future__ import annotations

import io
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from mifaslab.orthanc import OrthancProcess, free_port
from tests.pacs.certs import Pki, make_pki
from tests.pacs.conftest import CALLING_AE, DCMTK_ENV, ct_series, dcmtk, part10
from tests.support import dataset_sha256, require
from viewer.errors import PacsError
from viewer.library import Library
from viewer.pacs import DimseClient
from viewer.pacs.cluster import ClusterProfile, profile_from_json, profile_to_json
from viewer.pacs.fastfind import FastFindClient
from viewer.pacs.node import Node, Timeouts, node_from_json, node_to_json
from viewer.pacs.retrieve import retrieve
from viewer.pacs.retry import classify
from viewer.pacs.tls import TlsError, TlsSettings

TIMEOUTS = Timeouts(connect_s=2, acse_s=5, dimse_s=10, network_s=20)

pytestmark = [pytest.mark.network]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def study() -> list[pydicom.Dataset]:
    return ct_series(6, seed=41, patient_name="Tls^Patient", patient_id="MIFAS-TLS")


@pytest.fixture(scope="module")
def tls_move_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def tls_orthanc(tmp_path_factory: pytest.TempPathFactory, pki: Pki, study: list[pydicom.Dataset],
                tls_move_port: int) -> Iterator[OrthancProcess]:
    """Orthanc with DICOM TLS only, our CA trusted, a client certificate required, and our AE title as a
    C-MOVE destination reached over TLS."""
    config = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(pki.server.cert),
        "DicomTlsPrivateKey": str(pki.server.key),
        "DicomTlsTrustedCertificates": str(pki.ca),
        "DicomTlsRemoteCertificateRequired": True,
        "DicomModalities": {"mifas": {"AET": CALLING_AE, "Host": "127.0.0.1", "Port": tls_move_port,
                                      "UseDicomTls": True}},
    }
    process = OrthancProcess(
        tmp_path_factory.mktemp("orthanc-tls"), aet="ORTHANCTLS", check_called_aet=True, remote_access=False,
        dicomweb=False, extra_config=config, node_tls=TlsSettings(ca_file=str(pki.ca), cert_file=str(pki.client.cert),
                                                                  key_file=str(pki.client.key)),
    )
    with process:
        for ds in study:
            process.upload_bytes(part10(ds))
        yield process


def tls_node(orthanc: OrthancProcess, **tls: object) -> Node:
    node = orthanc.node(calling_ae=CALLING_AE, timeouts=TIMEOUTS)
    return replace(node, tls=replace(node.tls, **tls)) if tls else node  # type: ignore[arg-type]


def test_every_dimse_operation_runs_over_tls(tls_orthanc: OrthancProcess, study: list[pydicom.Dataset],
                                             tls_move_port: int, tmp_path: Path) -> None:
    node = tls_node(tls_orthanc)
    study_uid = str(study[0].StudyInstanceUID)
    sent = {str(ds.SOPInstanceUID): dataset_sha256(part10(ds)) for ds in study}
    client = DimseClient(node, storage_port=tls_move_port)
    try:
        assert client.echo() >= 0  # the health monitor's probe is this echo
        found = client.find("image", {"StudyInstanceUID": study_uid})
        assert {m["SOPInstanceUID"] for m in found} == set(sent)
        lean = FastFindClient(node).find("image", {"StudyInstanceUID": study_uid})
        assert {m["SOPInstanceUID"] for m in lean} == set(sent)

        moved: list[bytes] = []  # Orthanc opens its own TLS association to our Storage SCP
        result = client.move(study_uid, sink=moved.append)
        assert result.completed == len(sent)
        assert {str(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID): dataset_sha256(d) for d in moved} == sent

        extra = ct_series(1, seed=42, study_uid=study_uid, patient_name="Tls^Patient", patient_id="MIFAS-TLS")[0]
        client.store([part10(extra)])
        assert len(client.find("image", {"StudyInstanceUID": study_uid})) == len(sent) + 1
        sent[str(extra.SOPInstanceUID)] = dataset_sha256(part10(extra))
    finally:
        client.close()

    library = Library(tmp_path / "library")  # the engine's lean C-GET
    outcome = retrieve(ClusterProfile.of_node(node, "get"), study_uid, library=library)
    assert outcome.complete and outcome.held == len(sent)
    held = {uid: dataset_sha256(library.path_of(uid).read_bytes()) for uid in sent}
    assert held == sent


def test_a_silent_connection_does_not_block_the_tls_storage_scp(tls_orthanc: OrthancProcess,
                                                                study: list[pydicom.Dataset],
                                                                tls_move_port: int) -> None:
    """Someone connects to our Storage SCP and never starts the TLS handshake: the PACS's own association
    must still be accepted (pynetdicom alone would handshake in its accept loop and wait there)."""
    study_uid = str(study[0].StudyInstanceUID)
    client = DimseClient(tls_node(tls_orthanc), storage_port=tls_move_port)
    try:
        held = len(client.find("image", {"StudyInstanceUID": study_uid}))
        assert client.move(study_uid, sink=lambda data: None).completed == held  # the SCP is listening now
        with socket.create_connection(("127.0.0.1", tls_move_port), timeout=5) as silent:
            moved: list[bytes] = []
            result = client.move(study_uid, sink=moved.append)
            assert silent.fileno() >= 0
        assert (result.completed, result.failed, len(moved)) == (held, 0, held)
    finally:
        client.close()


def test_the_tls_port_refuses_plain_dimse(tls_orthanc: OrthancProcess) -> None:
    plain = replace(tls_node(tls_orthanc), tls=None)
    with pytest.raises(PacsError):
        DimseClient(plain).echo()


@pytest.mark.parametrize("stack", ["lean", "pynetdicom"])
def test_a_missing_client_certificate_is_named(tls_orthanc: OrthancProcess, pki: Pki, stack: str) -> None:
    node = replace(tls_node(tls_orthanc), tls=TlsSettings(ca_file=str(pki.ca)))
    error = _fail(node, stack)
    assert "requires a client certificate" in str(error)


@pytest.mark.parametrize("stack", ["lean", "pynetdicom"])
def test_a_client_certificate_from_an_unknown_ca_is_named(tls_orthanc: OrthancProcess, pki: Pki, stack: str) -> None:
    node = tls_node(tls_orthanc, cert_file=str(pki.stranger_client.cert), key_file=str(pki.stranger_client.key))
    error = _fail(node, stack)
    assert "does not accept this workstation's certificate" in str(error)


@pytest.mark.parametrize("stack", ["lean", "pynetdicom"])
def test_tls_to_a_plain_dimse_port_is_named(orthanc: OrthancProcess, pki: Pki, stack: str) -> None:
    node = replace(orthanc.node(calling_ae=CALLING_AE, timeouts=TIMEOUTS), tls=TlsSettings(ca_file=str(pki.ca)))
    error = _fail(node, stack)
    assert "did not answer in TLS" in str(error)


@pytest.fixture
def storescp_tls(tmp_path: Path, pki: Pki) -> Iterator[callable]:  # type: ignore[valid-type]
    """DCMTK's storescp speaking TLS with the certificate given; returns its node (our CA, our client cert)."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(issued: object) -> Node:
        port = free_port()
        out = tmp_path / f"storescp-{port}"
        out.mkdir()
        process = subprocess.Popen(
            [dcmtk("storescp"), "+tls", str(issued.key), str(issued.cert), "-pem", "+cf", str(pki.ca),  # type: ignore[attr-defined]
             "-vc", "-od", str(out), "-aet", "STORESCP", str(port)],
            env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(process)
        _wait_listening(port, process)
        return Node(name="storescp", ae_title="STORESCP", host="127.0.0.1", port=port, calling_ae=CALLING_AE,
                    timeouts=TIMEOUTS, tls=TlsSettings(ca_file=str(pki.ca), cert_file=str(pki.client.cert),
                                                       key_file=str(pki.client.key)))

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    """Until storescp accepts TCP (it binds before it reads the certificates, so this is the readiness)."""
    for _ in range(500):
        require(process.poll() is None, "storescp +tls exited at start (is DCMTK built with OpenSSL?)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            try:
                process.wait(timeout=0.02)  # a pause that ends early if storescp exits
            except subprocess.TimeoutExpired:
                pass
    raise AssertionError("storescp +tls never listened")


CERTIFICATE_CASES = {
    "good": None,
    "expired": "has expired",
    "wrong_host": "is not for '127.0.0.1'",
    "stranger": "not signed by the CA you configured",
}


@pytest.mark.parametrize("stack", ["lean", "pynetdicom"])
@pytest.mark.parametrize("case", list(CERTIFICATE_CASES))
def test_each_server_certificate_problem_has_its_sentence(storescp_tls, pki: Pki, case: str, stack: str) -> None:  # type: ignore[no-untyped-def]
    node = storescp_tls(getattr(pki, {"good": "server"}.get(case, case)))
    expected = CERTIFICATE_CASES[case]
    if expected is None:  # the same peer with a good certificate: the association opens (storescp has no C-FIND)
        if stack == "pynetdicom":
            assert DimseClient(node).echo() >= 0
        return
    error = _fail(node, stack)
    assert expected in str(error), str(error)


def test_server_name_verifies_a_certificate_issued_for_a_name(storescp_tls, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    node = storescp_tls(pki.wrong_host)
    named = replace(node, tls=replace(node.tls, server_name="pacs.example.org"))
    assert DimseClient(named).echo() >= 0
    unchecked = replace(node, tls=replace(node.tls, verify_hostname=False))
    assert DimseClient(unchecked).echo() >= 0


def _fail(node: Node, stack: str) -> PacsError:
    with pytest.raises(PacsError) as caught:
        if stack == "lean":
            FastFindClient(node).find("study", {"PatientID": "MIFAS-TLS"})
        else:
            DimseClient(node).echo()
    error = caught.value
    assert isinstance(error, TlsError), f"{type(error).__name__}: {error}"
    assert error.transient is False and classify(error).transient is False
    return error


# -- settings ---------------------------------------------------------------------------------------------------


def test_tls_settings_round_trip_and_refuse_half_a_key_pair(pki: Pki) -> None:
    node = Node(name="n", ae_title="PACS", host="127.0.0.1", port=104,
                tls=TlsSettings(ca_file=str(pki.ca), cert_file="c.pem", key_file="k.pem", server_name="pacs"))
    assert node_from_json(node_to_json(node)) == node
    assert node_from_json({**node_to_json(node), "tls": True}).tls == TlsSettings()
    assert node_from_json({**node_to_json(node), "tls": None}).tls is None
    with pytest.raises(PacsError, match="both 'cert_file' and 'key_file'"):
        node_from_json({**node_to_json(node), "tls": {"cert_file": "c.pem"}})
    with pytest.raises(PacsError, match="unknown keys: ca"):
        node_from_json({**node_to_json(node), "tls": {"ca": "x"}})


def test_a_cluster_profile_gives_its_tls_to_the_vip_and_members(pki: Pki) -> None:
    profile = profile_from_json({
        "name": "tls-cluster", "tls": {"ca_file": str(pki.ca), "server_name": "pacs.example.org"},
        "vip": {"host": "192.0.2.10", "port": 2762},
        "members": [{"host": "192.0.2.11", "port": 2762},
                    {"host": "192.0.2.12", "port": 2762, "tls": {"ca_file": str(pki.ca), "server_name": "b.example.org"}}],
    })
    names = [n.tls.server_name for n in profile.candidates()]  # type: ignore[union-attr]
    assert names == ["pacs.example.org", "pacs.example.org", "b.example.org"]
    assert profile_from_json(profile_to_json(profile)) == profile


def test_unreadable_certificate_files_are_named(tls_orthanc: OrthancProcess, pki: Pki, tmp_path: Path) -> None:
    missing = tls_node(tls_orthanc, ca_file=str(tmp_path / "nowhere.pem"))
    with pytest.raises(TlsError, match="nowhere.pem' cannot be read"):
        FastFindClient(missing).find("study", {})
    swapped = tls_node(tls_orthanc, cert_file=str(pki.client.cert), key_file=str(pki.server.key))
    with pytest.raises(TlsError, match="cannot be used"):
        DimseClient(swapped).echo()


def test_the_tls_storage_scp_refuses_a_huge_association_request(pki: Pki) -> None:
    """The same PDU bound as on a plain Storage SCP (test_dimse_faults), after a good TLS handshake."""
    from viewer.pacs import StorageScp
    from viewer.pacs.tls import client_context

    ours = TlsSettings(ca_file=str(pki.ca), cert_file=str(pki.client.cert), key_file=str(pki.client.key))
    theirs = TlsSettings(ca_file=str(pki.ca), cert_file=str(pki.server.cert), key_file=str(pki.server.key))
    with StorageScp("MIFASSCP", 0, "127.0.0.1", tls=ours) as scp:
        raw = socket.create_connection(("127.0.0.1", scp.port), timeout=10)
        with client_context(theirs).wrap_socket(raw, server_hostname="127.0.0.1") as peer:
            failed: OSError | None = None
            try:
                peer.sendall(b"\x01\x00\xff\xff\xff\xff")
                for _ in range(64):
                    peer.sendall(bytes(1 << 20))
            except OSError as exc:
                failed = exc
            assert failed is not None and not isinstance(failed, TimeoutError), "the SCP read all 64 MiB"


def test_mifas_pacs_echo_over_tls_from_the_command_line(tls_orthanc: OrthancProcess, pki: Pki) -> None:
    """IT's check: the command-line options, and the sentence (exit 1, no traceback) without a certificate."""
    import sys

    command = [str(Path(sys.executable).with_name("mifas-pacs")), "echo", "--node",
               f"{tls_orthanc.aet}@127.0.0.1:{tls_orthanc.dicom_port}", "--calling-ae", CALLING_AE,
               "--tls-ca", str(pki.ca)]
    env = {**DCMTK_ENV, "MIFAS_CONFIG_DIR": str(pki.ca.parent / "config")}
    ok = subprocess.run([*command, "--tls-cert", str(pki.client.cert), "--tls-key", str(pki.client.key)],
                        capture_output=True, text=True, timeout=60, env=env)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode != 0 and "requires a client certificate" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_refused_certificate_in_a_library_retrieval_is_a_security_alert(storescp_tls, pki: Pki,  # type: ignore[no-untyped-def]
                                                                           tmp_path: Path) -> None:
    """The viewer's retrievals (run_job, as the PACS panel and mifas-pacs get --library run them) record a
    Security Alert in the audit trail when the PACS's certificate is refused, beside the failed transfer."""
    from tests.audit.support import parse
    from viewer import audit
    from viewer.audit import AuditConfig
    from viewer.library.jobs import JobStore, run_job
    from viewer.pacs.resume import ResilientClient

    node = storescp_tls(pki.expired)
    audit.start("mifas-viewer", AuditConfig(), tmp_path / "audit")
    try:
        with Library.open(tmp_path / "library") as library:
            jobs = JobStore(library)
            profile = ClusterProfile.of_node(node, "get")
            job = jobs.get(jobs.add("1.2.3.4", None, profile.name))
            assert run_job(ResilientClient(profile, library), jobs, job) is None
            assert "has expired" in (jobs.get(job.job_id).last_error or "")
            jobs.close()
    finally:
        audit.stop()
    received = [parse(line) for path in (tmp_path / "audit").glob("audit-*.log")
                for line in path.read_bytes().splitlines()]
    assert [m.event for m in received] == ["Application Start", "Begin Transferring DICOM Instances",
                                           "DICOM Instances Transferred", "Node Authentication", "Application Stop"]
