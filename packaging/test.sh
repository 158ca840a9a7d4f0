#!/usr/bin/env bash
# Install everything the tests need (Debian packages via apt when missing, Python packages into .venv)
# and run the whole suite: lint, then pytest.  Extra arguments go to pytest, e.g.  bash packaging/test.sh -k pacs
set -euo pipefail
source "$(dirname "$0")/lib/deps.sh"
# Real peers and a virtual screen: Orthanc (+ DICOMweb plugin) and DCMTK, Xvfb for pytest-qt; Heartbeat, iptables,
# arptables and curl for the two-node cluster in network namespaces (tests/failover); iproute2 (ip, tc, ss) for
# those namespaces and the tc-shaped replicas of the co-allocation tests (tests/pacs); qemu, debootstrap and ssh for
# the cluster-in-VMs lab (tests/lab: it builds its guest image from Debian's mirror and caches it outside the
# repository, in ~/.cache/mifas-lab); dpkg (dpkg-deb), binutils (strip), desktop-file-utils and debootstrap for
# the install test (tests/install: it builds the .deb and installs it into a Debian 12 root cached in
# ~/.cache/mifas-install); dbus and gnome-keyring for the private Secret Service of the keyring tests; rsyslog with
# its TLS driver (rsyslog-gnutls) and openssl as the audit repository of tests/audit (its own rsyslogd, never the service); dicom3tools
# (dciodvfy) checks the presentation states, reports and key objects a reading writes (tests/reading).
apt_ensure python3-venv orthanc orthanc-dicomweb dcmtk xvfb xauth libgl1-mesa-dri heartbeat iptables arptables curl iproute2 \
  qemu-system-x86 qemu-utils debootstrap openssh-client e2fsprogs procps dpkg binutils util-linux desktop-file-utils \
  dbus gnome-keyring rsyslog rsyslog-gnutls openssl dicom3tools ffmpeg "${QT_RUNTIME_PACKAGES[@]}"
venv_ensure "[test]"
cd "$MIFAS_ROOT"
lab_ensure
# DCMTK-based processes (Orthanc, getscu, dcmqrscp) leave Nagle's algorithm on without this: 40 ms per instance.
export TCP_NODELAY=1
say "ruff check"
"$MIFAS_VENV/bin/ruff" check viewer tests benchmarks packaging/lab packaging/deb
say "pytest"
exec "$MIFAS_VENV/bin/python" -m pytest "$@"
