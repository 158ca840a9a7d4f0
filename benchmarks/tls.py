"""What DICOM TLS costs: the same study from the same Orthanc build, plain and over TLS, next to DCMTK's getscu.

    python benchmarks/tls.py [--instances 200] [--rounds 5]

Two local Orthanc processes hold the same --instances 512x512 CT slices: one plain, one with DICOM TLS only and a
client certificate required (certificates from tests/pacs/certs.py, EC P-256).  Each round runs, in an order that
alternates from round to round, the retrieval engine (``viewer.pacs.retrieve.retrieve``, lean C-GET into a fresh
library, in this process) against each, and DCMTK's ``getscu`` (a whole process, STUDY level, into a folder)
against the plain one: Debian's DCMTK 3.6.7 builds getscu without TLS (``+tls`` is an unknown option there, as
for movescu and dcmqrscp), so there is no DCMTK C-GET over TLS to compare with.

Figures (medians over rounds, printed as one JSON line):
- ``engine_tls_over_plain``: the engine's time over TLS over its time plain (> 1: TLS is slower);
- ``engine_plain_ratio_vs_getscu``, ``engine_tls_ratio_vs_getscu``: getscu's time (plain) over the engine's, plain
  and over TLS (> 1: the engine is faster);
- ``echo_plain_s``, ``echo_tls_s``: one C-ECHO on a new association (pynetdicom), median of 15: the handshake's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging" / "lab"))

from benchmarks.retrieve import ENV, GETSCU, datasets, ratios, study_of, timed  # noqa: E402

CALLING_AE = "MIFASBENCH"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from dataclasses import replace

    from mifaslab.orthanc import OrthancProcess
    from tests.pacs.certs import make_pki
    from viewer.library import Library
    from viewer.pacs import DimseClient
    from viewer.pacs.cluster import ClusterProfile
    from viewer.pacs.retrieve import retrieve
    from viewer.pacs.tls import TlsSettings

    n = args.instances
    with tempfile.TemporaryDirectory(prefix="mifas-bench-tls-") as tmp:
        work = Path(tmp)
        pki = make_pki(work / "pki")
        client_tls = TlsSettings(ca_file=str(pki.ca), cert_file=str(pki.client.cert), key_file=str(pki.client.key))
        tls_config = {"DicomTlsEnabled": True, "DicomTlsCertificate": str(pki.server.cert),
                      "DicomTlsPrivateKey": str(pki.server.key), "DicomTlsTrustedCertificates": str(pki.ca),
                      "DicomTlsRemoteCertificateRequired": True}
        parts = datasets(n, 512, seed=17)
        study_uid, _ = study_of(parts[0])
        times: dict[str, list[float]] = {k: [] for k in ("getscu_plain", "engine_plain", "engine_tls")}
        echo: dict[str, list[float]] = {"plain": [], "tls": []}
        with OrthancProcess(work / "plain", aet="ORTHANCP", dicomweb=False) as plain, \
                OrthancProcess(work / "tls", aet="ORTHANCS", dicomweb=False, extra_config=tls_config,
                               node_tls=client_tls) as secure:
            for data in parts:
                plain.upload_bytes(data)
                secure.upload_bytes(data)
            nodes = {"plain": plain.node(calling_ae=CALLING_AE), "tls": secure.node(calling_ae=CALLING_AE)}

            def getscu(kind: str) -> None:
                node = nodes[kind]
                out = Path(tempfile.mkdtemp(dir=work))
                subprocess.run([GETSCU, "-aet", CALLING_AE, "-aec", node.ae_title, node.host, str(node.port),
                                "-k", "QueryRetrieveLevel=STUDY",
                                "-k", f"StudyInstanceUID={study_uid}", "-od", str(out)],
                               check=True, capture_output=True, timeout=600, env=ENV)
                assert len(list(out.iterdir())) == n

            def engine(kind: str) -> None:
                with Library.open(Path(tempfile.mkdtemp(dir=work)) / "lib") as library:
                    outcome = retrieve(ClusterProfile.of_node(nodes[kind], "get"), study_uid, library=library)
                    assert outcome.complete and outcome.held == n, outcome.describe()

            runs = [("getscu_plain", lambda: getscu("plain")), ("engine_plain", lambda: engine("plain")),
                    ("engine_tls", lambda: engine("tls"))]
            engine("plain"), engine("tls")  # warm-up: imports, contexts, Orthanc's caches
            for round_ in range(args.rounds):
                order = runs if round_ % 2 == 0 else runs[::-1]
                for name, run in order:
                    times[name].append(timed(run))
            for _ in range(15):
                for kind in ("plain", "tls"):
                    started = time.perf_counter()
                    DimseClient(replace(nodes[kind])).echo()
                    echo[kind].append(time.perf_counter() - started)

    medians = {k: round(statistics.median(v), 3) for k, v in times.items()}
    result = {
        "benchmark": "tls", "instances": n, "rounds": args.rounds, "cpus": os.cpu_count(),
        "seconds_median": medians,
        "engine_tls_over_plain": ratios(times["engine_tls"], times["engine_plain"]),
        "engine_plain_ratio_vs_getscu": ratios(times["getscu_plain"], times["engine_plain"]),
        "engine_tls_ratio_vs_getscu": ratios(times["getscu_plain"], times["engine_tls"]),
        "echo_plain_s": round(statistics.median(echo["plain"]), 4),
        "echo_tls_s": round(statistics.median(echo["tls"]), 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
