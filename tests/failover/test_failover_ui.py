"""The main window across a real Heartbeat takeover: what the clinician sees.

The window runs in this process but on the cluster lab's LAN (tests.support.network_namespace): it is created,
used and closed inside the block, so its worker pools and the health monitor's thread are started there.  A
300-instance study is seeded through the virtual IP; the retrieval is started from the PACS page of the cluster
profile; when some images are here (and the series is open in the viewport), the active node is killed.

Asserted on real widget state: the event log says in words that the VIP stopped answering and that the C-GET
resumed; the health dock shows the VIP served by nodeb afterwards; the failover banner said it was retrying and
is gone; the open series and the library end with all 300 instances, once each; no message box or other dialog
was ever shown.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pydicom
import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox

from mifaslab.netns import ClusterLab
from tests.support import network_namespace
from viewer.dicom.demo import ct_series_datasets
from viewer.library import Library
from viewer.library.jobs import JobStore
from viewer.pacs.health import STATE_TEXT
from viewer.settings import Settings
from viewer.ui.banner import RETRYING_TEXT
from viewer.ui.main_window import MainWindow
from viewer.ui.pacs_panel import PacsPanel

pytestmark = [pytest.mark.gui, pytest.mark.network, pytest.mark.slow]

INSTANCES = 300
# The node is killed at the first progress the window hears (reports come at most every PROGRESS_INTERVAL_S), with
# 512x512 slices so that most of the study is still on the wire then: at 60 images of 256x256, on a busy CI machine
# the next report came at 187 with the whole study already received, and no outage was seen.
FAULT_AFTER = 1
PROFILE = "lab"
RETRIEVE_LIMIT_MS = 150_000
HEALTH_LIMIT_MS = 60_000


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[str, str, Path]:
    folder = tmp_path_factory.mktemp("source")
    for i, ds in enumerate(ct_series_datasets(INSTANCES, rows=512, cols=512, seed=37)):
        pydicom.dcmwrite(folder / f"{i:04d}.dcm", ds, enforce_file_format=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), folder


def write_profile(path: Path) -> None:
    vip = {"host": "192.0.2.10", "port": 4242, "name": "virtual IP", "rest_url": "http://192.0.2.10:8042"}
    members = [{"host": f"192.0.2.{n}", "port": 4242, "name": name, "rest_url": f"http://192.0.2.{n}:8042"}
               for n, name in ((11, "nodea"), (12, "nodeb"))]
    path.write_text(json.dumps({"profiles": [{"name": PROFILE, "vip": vip, "members": members,
                                              "ae_title": "MIFASPACS"}]}))


def visible_dialogs() -> list[str]:
    return [f"{type(w).__name__}: {w.windowTitle()}" for w in QApplication.topLevelWidgets()
            if isinstance(w, (QMessageBox, QDialog)) and w.isVisible()]


def states(window: MainWindow) -> dict[str, str]:
    return {row[0]: row[2] for row in window.health.row_texts()}


def test_the_window_rides_out_a_takeover(qtbot, cluster: ClusterLab, study, tmp_path: Path) -> None:
    study_uid, series_uid, source = study
    seeded = subprocess.run(cluster.client_cmd(["/usr/bin/storescu", "-aec", "MIFASPACS", "192.0.2.10", "4242",
                                                *map(str, sorted(source.iterdir()))]),
                            env=dict(os.environ, TCP_NODELAY="1"), capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    profiles = tmp_path / "config" / "clusters.json"
    profiles.parent.mkdir()
    write_profile(profiles)
    seen_dialogs: list[str] = []
    watch = QTimer()
    watch.timeout.connect(lambda: seen_dialogs.extend(d for d in visible_dialogs() if d not in seen_dialogs))
    watch.start(10)
    banner_states: list[str] = []
    fault: dict[str, object] = {}

    with Library.open(tmp_path / "library") as library, network_namespace(cluster.lan_ns):
        window = MainWindow(library, Settings(), settings_path=profiles.parent / "settings.json",
                            cluster_profiles_path=profiles, system_profiles_dir=None, health_interval_s=1.0)
        qtbot.addWidget(window)
        try:
            window.resize(1200, 900)
            window.show()
            before = {"virtual IP": f"{STATE_TEXT['up']} (served by nodea)", "nodea": STATE_TEXT["serving"],
                      "nodeb": STATE_TEXT["standby"]}
            qtbot.waitUntil(lambda: states(window) == before, timeout=HEALTH_LIMIT_MS)

            window.browser.source.setCurrentIndex(window.browser.source.findText(f"PACS cluster: {PROFILE}"))
            page = window.browser.current_page()
            assert isinstance(page, PacsPanel)
            page.run_query()
            qtbot.waitUntil(lambda: "found on" in page.status.text(), timeout=30000)
            assert page.status.text() == f"1 study found on {PROFILE}.", page.status.text()
            page.table.selectRow(0)

            def on_progress(job_id: int, study: str, done: int, total: int) -> None:
                # On the GUI thread, as images arrive: open the series once some are here, then kill the node.
                if "at" in fault or done < FAULT_AFTER:
                    return
                fault["at"] = done
                window.browser.refresh(study_uid)
                assert window.open_series(series_uid)
                fault["opened_with"] = window.viewport.model.count
                window.viewport.model.set_index(window.viewport.model.count // 2)
                fault["shown"] = window.viewport.model.series.frame_ref(window.viewport.model.index).sop_instance_uid
                fault["node"] = cluster.fail("kill")

            window.retrievals.job_progress.connect(on_progress)
            retry_events: list[str] = []
            window.retrievals.retry_event.connect(
                lambda e: retry_events.append(f"{type(e).__name__} {e.operation} {e.node} {getattr(e, 'transient', '')}"))
            window.banner_controller.banner.retry_clicked.connect(lambda: banner_states.append("retry clicked"))
            qtbot.mouseClick(page.retrieve_button, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda: page.status.text().startswith(("Retrieved from", "The retrieval from")),
                            timeout=RETRIEVE_LIMIT_MS)
            status = page.status.text()
            events = window.health.event_texts()
            print(f"\nfault on {fault.get('node')} with {fault.get('at')} of {INSTANCES} images here\n"
                  + "\n".join(events) + f"\nretry events: {retry_events}\nbanner: {window.banner_controller.shown_texts}\nstatus: {status}")
            assert "node" in fault, "the retrieval ended before the fault: the test would prove nothing"
            assert fault["node"] == "nodea"
            assert status == f"Retrieved from {PROFILE}: {INSTANCES} of {INSTANCES} images are here ({INSTANCES} received)."

            # The event log says it in words: the outage, then the resumption.
            assert any("stopped answering at" in t and "during the C-GET; retrying." in t for t in events), events
            assert any(t.startswith("The C-GET resumed through") for t in events), events
            # The banner said it was retrying (no dialog), and left when the transfer resumed.
            assert any(t.startswith(RETRYING_TEXT) for t in window.banner_controller.shown_texts)
            assert not window.banner.isVisible() and window.banner.state == "hidden"
            assert banner_states == []  # nobody had to press Retry

            # The health dock: the VIP is now served by nodeb.
            qtbot.waitUntil(lambda: states(window).get("virtual IP") == f"{STATE_TEXT['up']} (served by nodeb)"
                            and states(window).get("nodeb") == STATE_TEXT["serving"], timeout=HEALTH_LIMIT_MS)
            assert states(window)["nodea"] in (STATE_TEXT["down"], STATE_TEXT["standby"])
            assert any("The virtual IP is served by nodeb" in t for t in window.health.event_texts())

            # The open series filled in around the slice being read.
            model = window.viewport.model
            assert fault["opened_with"] < INSTANCES
            assert model.count == INSTANCES
            assert model.series.frame_ref(model.index).sop_instance_uid == fault["shown"]
            qtbot.waitUntil(lambda: window.viewport.painted_index == model.index, timeout=10000)
            assert window.viewport.message == ""
        finally:
            window.close()
            watch.stop()

        records = list(library.iter_instances())
        assert len(records) == INSTANCES == len({r.sop_instance_uid for r in records})
        jobs = JobStore(library)
        job = jobs.jobs()[0]
        assert (job.state, job.received, job.expected) == ("done", INSTANCES, INSTANCES)
        jobs.close()
    assert seen_dialogs == [], seen_dialogs
