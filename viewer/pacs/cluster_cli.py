"""``mifas-pacs`` against a cluster profile: ``echo|find|get --cluster NAME`` and ``health --cluster NAME``.

Everything goes through the one retry-and-resume engine (:mod:`viewer.pacs.resume`), so IT and testers see exactly
what the viewer does during a failover: the event sentences are printed to stderr as they happen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from viewer.errors import PacsError

if TYPE_CHECKING:
    from viewer.pacs.cluster import ClusterProfile
    from viewer.pacs.health import EventLog, NodeStatus

PROFILES_FILE = "clusters.json"
WATCH_S_MAX = 24 * 3600


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profiles", metavar="PATH",
                        help=f"the user's cluster profiles (default: {PROFILES_FILE} in the config folder); "
                             "system-wide profiles in /etc/mifas-viewer/*.json are read first")


def load_profile(args: argparse.Namespace, warn: Callable[[str], None]) -> ClusterProfile:
    from viewer.pacs.cluster import load_profiles
    from viewer.settings import config_dir

    path = Path(args.profiles).expanduser() if args.profiles else config_dir() / PROFILES_FILE
    profiles = load_profiles(path)
    for warning in profiles.warnings:
        warn(warning)
    return profiles.get(args.cluster)


def printing_event_log() -> EventLog:
    """An event log that also prints each sentence to stderr as it is recorded (from worker threads too)."""
    from viewer.pacs.health import EventLog

    class Printing(EventLog):
        def add(self, text: str, at: float | None = None):  # type: ignore[override]
            entry = super().add(text, at)
            print(text, file=sys.stderr, flush=True)
            return entry

    return Printing()


def cluster_echo(profile: ClusterProfile) -> int:
    from viewer.pacs.resume import ResilientClient

    node, seconds = ResilientClient(profile, on_event=printing_event_log().record).echo()
    print(f"cluster {profile.name}: {node} answered in {seconds * 1000:.1f} ms")
    return 0


def cluster_find(profile: ClusterProfile, level: str, keys: dict[str, str], limit: int) -> int:
    from viewer.pacs.resume import ResilientClient

    for row in ResilientClient(profile, on_event=printing_event_log().record).find(level, keys, limit=limit):
        print(json.dumps(row, ensure_ascii=False, sort_keys=True))
    return 0


def _status_line(s: NodeStatus) -> str:
    from viewer.pacs.health import STATE_TEXT

    parts = [f"{s.name:<12} {s.address:<22} {STATE_TEXT[s.state]}"]
    if s.rtt_s is not None and s.up:
        parts.append(f"{s.rtt_s * 1000:.1f} ms")
    if s.web_up is not None:
        parts.append("dicomweb " + ("up" if s.web_up else "down"))
    if s.is_vip and s.serving:
        parts.append(f"served by {s.serving}")
    if s.error and not s.up:
        parts.append(f"({s.error})")
    return "  ".join(parts)


def cluster_health(profile: ClusterProfile, *, as_json: bool, watch_s: float, interval_s: float) -> int:
    """Probe the VIP and every member once (or keep watching, printing the event log); exit 1 when nothing
    of the cluster answers."""
    from viewer.pacs.health import HealthMonitor

    if not 0 <= watch_s <= WATCH_S_MAX:
        raise PacsError(f"--watch must be between 0 and {WATCH_S_MAX} seconds.")
    monitor = HealthMonitor(profile, interval_s=interval_s)
    statuses = monitor.check_once()
    if watch_s:
        printed = len(monitor.event_log.entries())
        with monitor:
            end = time.monotonic() + watch_s
            while time.monotonic() < end:
                time.sleep(min(0.5, max(0.0, end - time.monotonic())))
                entries = monitor.event_log.entries()
                for entry in entries[printed:]:
                    print(entry.text, flush=True)
                printed = len(entries)
        statuses = monitor.statuses()
    if as_json:
        print(json.dumps([asdict(s) for s in statuses], sort_keys=True))
    else:
        for s in statuses:
            print(_status_line(s))
    return 0 if any(s.up for s in statuses) else 1
