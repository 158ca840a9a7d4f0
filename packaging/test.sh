#!/usr/bin/env bash
# Install everything the tests need (Debian packages via apt when missing, Python packages into .venv)
# and run the whole suite: lint, then pytest.  Extra arguments go to pytest, e.g.  bash packaging/test.sh -k pacs
set -euo pipefail
source "$(dirname "$0")/lib/deps.sh"
# Real peers and a virtual screen: Orthanc (+ DICOMweb plugin) and DCMTK, Xvfb for pytest-qt; Heartbeat, iptables,
# arptables and curl for the two-node cluster in network namespaces (tests/failover).
apt_ensure python3-venv orthanc orthanc-dicomweb dcmtk xvfb xauth libgl1-mesa-dri heartbeat iptables arptables curl \
  "${QT_RUNTIME_PACKAGES[@]}"
venv_ensure "[test]"
cd "$MIFAS_ROOT"
# DCMTK-based processes (Orthanc, getscu, dcmqrscp) leave Nagle's algorithm on without this: 40 ms per instance.
export TCP_NODELAY=1
say "ruff check"
"$MIFAS_VENV/bin/ruff" check viewer tests benchmarks
say "pytest"
exec "$MIFAS_VENV/bin/python" -m pytest "$@"
