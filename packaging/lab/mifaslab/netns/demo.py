"""``mifas-lab cluster-demo up|failover|status|down``: the cluster lab for demos, one command per step.

The lab's state lives in ``--workdir`` (default /var/tmp/mifas-cluster-demo, not under /run: the nodes mount
their own /run), so each step can run in a new process; the nodes outlive the ``up`` command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from mifaslab.netns.config import DICOM_PORT, ECHOSCU, FAULT_MODES, PACS_AET, STATE_FILE, VIP
from mifaslab.netns.host import ClusterLabError
from mifaslab.netns.lab import ClusterLab, cleanup_stale

DEFAULT_DEMO_DIR = Path("/var/tmp/mifas-cluster-demo")  # not under /run: the nodes mount a tmpfs over /run


def add_cluster_demo_parser(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
) -> argparse.ArgumentParser:
    """Add ``cluster-demo up|failover|status|down`` to a CLI's subcommands."""
    parser = subparsers.add_parser("cluster-demo", help="start, fault and stop a two-node Heartbeat PACS cluster "
                                   "in network namespaces (root)")
    parser.add_argument("action", choices=("up", "failover", "status", "down"))
    parser.add_argument("--mode", choices=FAULT_MODES, default="kill", help="failover: the fault (default kill)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_DEMO_DIR,
                        help=f"configs, logs, storage and state of the demo (default {DEFAULT_DEMO_DIR})")
    parser.add_argument("--prefix", default="mifasdemo", help="namespace name prefix (default mifasdemo)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="failover: how long to wait for the VIP to answer again (default 60)")
    return parser


def run_cluster_demo(args: argparse.Namespace) -> int:
    """Run one cluster-demo action; print a JSON object to stdout.  0 on success, 1 on failure (reason and log
    tails on stderr, several lines: more than the CLI's one-line errors, because a demo operator needs them),
    2 for a bad --prefix or --workdir."""
    try:
        result = _demo_action(args)
    except ClusterLabError as exc:
        sys.stderr.write(f"mifas-lab cluster-demo {args.action}: {exc}\n")
        return 1
    except ValueError as exc:  # a bad --prefix or --workdir
        sys.stderr.write(f"mifas-lab cluster-demo {args.action}: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


def _demo_action(args: argparse.Namespace) -> dict[str, Any]:
    if args.action == "up":
        lab = ClusterLab(args.workdir, prefix=args.prefix)
        start = time.monotonic()
        lab.up()
        return {**lab.status(), "up_s": round(time.monotonic() - start, 2),
                "try": f"ip netns exec {lab.lan_ns} {ECHOSCU} -aec {PACS_AET} {VIP} {DICOM_PORT}"}
    if args.action == "down" and not (Path(args.workdir) / STATE_FILE).exists():
        # nothing recorded: still remove what a killed `up` of this prefix may have left
        return {"down": True, "stale_namespaces_removed": cleanup_stale(args.prefix)}
    lab = ClusterLab.attach(args.workdir)
    if args.action == "status":
        return lab.status()
    if args.action == "down":
        lab.down()
        return {"lab": lab.lab_id, "down": True}
    for node in list(lab.failed):  # a demo faults again and again: bring the last victim back first
        lab.recover(node)
    node = lab.fail(args.mode)
    takeover_s = lab.wait_vip_answers(args.timeout, on=lab.peer(node))
    return {"mode": args.mode, "failed_node": node, "takeover_s": round(takeover_s, 2),
            "serving": lab.serving_node(), "status": lab.status()}
