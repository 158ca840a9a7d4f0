"""The child process of the hostile-input suite: runs one case per line of stdin, answers one JSON line each.

A case is ``{"name", "op", ...}``:

``file``  (``path``, ``work``) the file through the display decode (``DicomImage.open`` + every frame) and through
          the library (``import_paths`` into a fresh library, then ``order_frames`` + ``SeriesImages`` on what was
          indexed, first and last frame; a presentation state, report or key object selection indexed is read back
          as a saved reading: ``load_reading``, ``parse_report``, ``parse_kos``)
``find``  (``port``) a lean C-FIND (``FastFindClient``) against a scripted peer
``get``   (``port``) a lean C-GET (``FastGetClient``, one association) against a scripted peer
``qido`` / ``wado``  (``url``) a DICOMweb search / series retrieval against a hostile HTTP server

The answer is ``{"name", "verdict", "detail", "peak_rss_mib"}``: verdict ``ok`` (it worked, or every refusal was a
MifasError whose text is a sentence) or ``bad`` (anything else: another exception, or a refusal that is no
sentence). ``peak_rss_mib`` is this process's peak resident memory during the case (VmHWM, reset before it).
Run as ``python -m tests.fuzz.worker``; the parent (tests.fuzz.harness) adds the watchdog.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import traceback
from pathlib import Path

from viewer.errors import MifasError

logging.disable(logging.CRITICAL)  # the codecs' messages are not under test here

_STUDY = "1.2.826.0.1.3680043.8.498.1"
_SERIES = "1.2.826.0.1.3680043.8.498.1.1"


def is_sentence(text: str) -> bool:
    """A user-facing sentence: some words, ending as a sentence does, on one line, not cut, no traceback."""
    text = text.strip()
    return (len(text) >= 12 and text[-1] in ".?!" and "\n" not in text and "…" not in text
            and "Traceback" not in text and " " in text)


class Refusals:
    def __init__(self) -> None:
        self.bad: list[str] = []
        self.seen: list[str] = []

    def mifas(self, where: str, exc: MifasError) -> None:
        self.seen.append(f"{where}: {type(exc).__name__}")
        if not is_sentence(str(exc)):
            self.bad.append(f"{where}: {type(exc).__name__} is no sentence: {str(exc)[:300]!r}")

    def reason(self, where: str, text: str) -> None:
        self.seen.append(f"{where}: refused")
        if not is_sentence(text):
            self.bad.append(f"{where}: the reason is no sentence: {text[:300]!r}")

    def other(self, where: str, exc: BaseException) -> None:
        tail = "".join(traceback.format_exception(exc)[-3:])[-600:]
        self.bad.append(f"{where}: {type(exc).__name__}: {str(exc)[:200]!r} (not a MifasError) {tail}")


def _guard(refusals: Refusals, where: str, action) -> object:  # type: ignore[no-untyped-def]
    try:
        return action()
    except MifasError as exc:
        refusals.mifas(where, exc)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: B036 - a Rust codec's PanicException is a BaseException: report it
        refusals.other(where, exc)
    return None


def run_file(case: dict, refusals: Refusals) -> None:
    from viewer.dicom.image import DicomImage
    from viewer.dicom.series import SeriesImages, order_frames
    from viewer.library import Library, import_paths

    path = Path(case["path"])
    _guard(refusals, "display", lambda: DicomImage.open(path).frames_all())
    library_root = Path(case["work"]) / "library"
    try:
        with Library.open(library_root) as library:
            summary = _guard(refusals, "import", lambda: import_paths(library, [path]))
            for failure in getattr(summary, "failures", []):
                refusals.reason("import", failure.reason)

            def show() -> None:
                for study in library.studies():
                    for series in library.series(study.study_uid):
                        frames = order_frames(library.instances(series.series_uid))
                        images = SeriesImages(frames)
                        for i in sorted({0, len(frames) - 1}):
                            if i >= 0:
                                _guard(refusals, "library display", lambda i=i, images=images: images.stored(i))

            _guard(refusals, "library listing", show)
            _guard(refusals, "saved reading", lambda: _read_readings(library, refusals))
    finally:
        shutil.rmtree(library_root, ignore_errors=True)


def _read_readings(library, refusals: Refusals) -> None:
    """Every PR, SR and KO object the library indexed, read back as the viewer reads a saved reading."""
    from viewer.reading import persist
    from viewer.reading.annotations import AnnotationStore
    from viewer.reading.keyobjects import parse_kos
    from viewer.reading.report import parse_report

    for study in library.studies():
        for series in library.series(study.study_uid):
            for inst in library.instances(series.series_uid):
                uid = inst.sop_instance_uid
                if series.modality == "PR":
                    _guard(refusals, "presentation state",
                           lambda uid=uid: persist.load_reading(library, uid, AnnotationStore()))
                elif series.modality == "SR":
                    _guard(refusals, "report", lambda uid=uid: parse_report(persist._read_object(library, uid)))
                elif series.modality == "KO":
                    _guard(refusals, "key objects", lambda uid=uid: parse_kos(persist._read_object(library, uid)))


def run_peer(case: dict, refusals: Refusals) -> None:
    from viewer.pacs.node import Node, Timeouts

    quick = Timeouts(connect_s=1.0, acse_s=1.0, dimse_s=1.0, network_s=2.0)
    op = case["op"]
    if op == "scp":
        _guard(refusals, "Storage SCP", lambda: _hostile_caller(bytes.fromhex(case["first"])))
        return
    if op in ("find", "get"):
        node = Node(name="hostile", ae_title="ANYSCP", host="127.0.0.1", port=case["port"], calling_ae="MIFASTEST",
                    timeouts=quick)
        if op == "find":
            from viewer.pacs.fastfind import FastFindClient

            _guard(refusals, "C-FIND", lambda: FastFindClient(node).find("study", limit=1000))
        else:
            from viewer.pacs.fastget import FastGetClient

            _guard(refusals, "C-GET", lambda: FastGetClient(node, associations=1).get(_STUDY, sink=lambda data: None))
        return
    from viewer.pacs.dicomweb import DicomWebClient

    client = DicomWebClient(case["url"], timeouts=quick)
    try:
        if op == "qido":
            _guard(refusals, "QIDO-RS", lambda: client.qido("study", limit=1000))
        else:
            _guard(refusals, "WADO-RS", lambda: client.retrieve(_STUDY, _SERIES, sink=lambda data: None))
    finally:
        client.close()


def _hostile_caller(first: bytes) -> None:
    """Our C-MOVE Storage SCP against a caller that sends `first`, then up to 1.2 GiB more of the same PDU: an SCP
    that buffers what a peer announces goes past the 1 GiB watchdog.  Then a well-formed association must still be
    accepted: the SCP survived."""
    import socket as sockets

    from pynetdicom import AE

    from viewer.pacs import StorageScp

    with StorageScp("FUZZSCP", 0, "127.0.0.1", network_timeout_s=2.0) as scp:
        with sockets.create_connection(("127.0.0.1", scp.port), timeout=5) as peer:
            try:
                peer.sendall(first)
                chunk = bytes(1 << 20)
                for _ in range(1200):
                    peer.sendall(chunk)
            except OSError:
                pass  # the SCP closed the connection: what it should do
        ae = AE(ae_title="FUZZPEER")
        ae.add_requested_context("1.2.840.10008.1.1")
        ae.acse_timeout = ae.network_timeout = 5
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="FUZZSCP")
        try:
            if not assoc.is_established:
                raise AssertionError("the Storage SCP no longer accepts a good association")
        finally:
            if assoc.is_established:
                assoc.release()


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        pass


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    import viewer.dicom.image  # noqa: F401 - imported before the first case so it is not measured in it
    import viewer.library  # noqa: F401
    import viewer.pacs.dicomweb  # noqa: F401
    import viewer.pacs.fastfind  # noqa: F401
    import viewer.pacs.fastget  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        refusals = Refusals()
        _reset_peak()
        if case["op"] == "file":
            run_file(case, refusals)
        else:
            run_peer(case, refusals)
        print(json.dumps({"name": case["name"], "verdict": "bad" if refusals.bad else "ok",
                          "detail": refusals.bad or refusals.seen, "peak_rss_mib": round(_peak_mib(), 1)}),
              flush=True)


if __name__ == "__main__":
    main()
