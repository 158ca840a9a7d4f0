"""mifas-lab: the command line of the lab (see the package docstring).  Exit 0 on success; on failure one
paragraph saying what went wrong (with the console log of a VM that did not boot) and exit 1."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from mifaslab import config, image
from mifaslab.host import LabError
from mifaslab.lab import FAILOVER_MODES, Lab
from mifaslab.netns import add_cluster_demo_parser, run_cluster_demo


def say(text: str) -> None:
    print(f"mifas-lab: {text}", file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mifas-lab", description="Two Debian VMs with DRBD + Heartbeat + Orthanc "
                                "behind a virtual IP, and a failover drill (docs/lab.md).")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or reuse) the cached guest image")
    b.add_argument("--force", action="store_true", help="rebuild even if the cache holds the current recipe")
    u = sub.add_parser("up", help="start the two VMs, DRBD and Heartbeat; wait for the VIP")
    u.add_argument("--accel", choices=["auto", "kvm", "tcg"], default=os.environ.get("MIFAS_LAB_ACCEL", "auto"))
    u.add_argument("--boot-timeout", type=float, default=config.BOOT_TIMEOUT_S, help="seconds (default %(default)s)")
    u.add_argument("--append", default="", help=argparse.SUPPRESS)  # extra kernel arguments (tests)
    s = sub.add_parser("status", help="primary, DRBD state, VIP holder, Orthanc health")
    s.add_argument("--json", action="store_true")
    f = sub.add_parser("failover", help="break the node holding the VIP and wait for the takeover")
    f.add_argument("--mode", choices=FAILOVER_MODES, default="hard",
                   help="hard: kill its qemu process; graceful: Heartbeat standby")
    r = sub.add_parser("recover", help="restart a killed node and wait for DRBD to resync")
    r.add_argument("node", choices=list(config.NODES))
    d = sub.add_parser("drill", help="the failover drill (acknowledged C-STOREs survive; JSON with --json)")
    d.add_argument("--json", action="store_true")
    d.add_argument("--instances", type=int, default=200)
    sh = sub.add_parser("shell", help="a root shell on a node")
    sh.add_argument("node", choices=list(config.NODES))
    e = sub.add_parser("exec", help="run a command in the lab's client namespace (e.g. mifas-pacs, mifas-viewer)")
    e.add_argument("argv", nargs=argparse.REMAINDER)
    sub.add_parser("profile", help="print a cluster profile file (clusters.json) for mifas-pacs and mifas-viewer")
    sub.add_parser("down", help="stop everything; remove the namespace, taps and run folder")
    add_cluster_demo_parser(sub)  # the namespace cluster (mifaslab.netns), no VMs: its own state and --workdir
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "cluster-demo":  # not the VM lab: prints its own JSON and errors, exit 0, 1 or 2
        return run_cluster_demo(args)
    lab = Lab(say=say)
    try:
        if args.command == "build":
            img, seconds = image.build(force=args.force, say=say)
            print(json.dumps({"image": str(img.folder), "build_s": round(seconds, 1)}))
        elif args.command == "up":
            state = lab.up(accel=args.accel, boot_timeout_s=args.boot_timeout, append_extra=args.append)
            print(json.dumps({"up_s": state["up_s"], "build_s": state["build_s"], "accel": state["accel"]}))
        elif args.command == "status":
            status = lab.status()
            print(json.dumps(status, indent=None if args.json else 1))
        elif args.command == "failover":
            print(json.dumps(lab.failover(args.mode)))
        elif args.command == "recover":
            print(json.dumps(lab.recover(args.node)))
        elif args.command == "drill":
            from mifaslab.drill import run_drill

            started = time.monotonic()
            result = run_drill(lab, instances=args.instances, say=say)
            result["drill_s"] = round(time.monotonic() - started, 1)
            print(json.dumps(result, indent=None if args.json else 1))
            return 0 if result["lost"] == 0 and result["corrupted"] == 0 and result["client_get_ok"] else 1
        elif args.command == "shell":
            argv_ = lab.shell_argv(args.node)
            os.execvp(argv_[0], argv_)
        elif args.command == "exec":
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            argv_ = lab.exec_argv(command)
            os.execvp(argv_[0], argv_)
        elif args.command == "profile":
            print(lab.profiles_json())
        elif args.command == "down":
            say(lab.down())
    except LabError as exc:
        print(f"mifas-lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mifas-lab: interrupted", file=sys.stderr)
        return 130
    return 0
