"""What the cluster lab is made of: its fixed addresses and ports, its limits, and the text of the files each node
gets (ha.cf, the orthanc-mifas resource script, the monitor and the reboot guard).  Pure: nothing here runs.

The shell scripts are templates for :meth:`str.format` (so literal braces are doubled); see the package docstring
for why each exists.
"""

from __future__ import annotations

from pathlib import Path

from mifaslab.orthanc import ORTHANC_BINARY

# -- the lab's fixed facts -----------------------------------------------------------------------------------

CLIENT_IP = "192.0.2.1"
VIP = "192.0.2.10"
PREFIX_LENGTH = 24
NODE_IPS = {"nodea": "192.0.2.11", "nodeb": "192.0.2.12"}
NODES = tuple(NODE_IPS)
NODE_IFACE = "eth0"
PACS_AET = "MIFASPACS"
DICOM_PORT = 4242
HTTP_PORT = 8042
CLIENT_AET = "MIFAS"
CLIENT_MOVE_PORT = 11113
FAULT_MODES = ("kill", "standby", "link", "freeze")

HEARTBEAT_BINARY = Path("/usr/libexec/heartbeat/heartbeat")  # Debian package "heartbeat"
HA_D = Path("/etc/ha.d")
HEARTBEAT_LIB = Path("/var/lib/heartbeat")
ECHOSCU = Path("/usr/bin/echoscu")  # by absolute path: pynetdicom's own echoscu may shadow it in a venv
CURL = Path("/usr/bin/curl")
HEARTBEAT_MASTER_TITLE = "heartbeat: master control process"
# Heartbeat's ResourceManager answers a failed stop with `pkill -9 heartbeat; reboot -nf; init 6`
# (RecoverFromFailedStop).  In a namespace that would kill every lab's Heartbeat and reboot the host, so each node
# mounts a refusing guard over these (mount follows the symlinks: reboot/halt -> systemctl, init -> systemd,
# pkill -> pgrep), in its private mount namespace only.
GUARDED_COMMANDS = ("/sbin/reboot", "/sbin/init", "/usr/bin/pkill", "/usr/bin/killall")
STATE_FILE = "lab.json"

# -- limits ----------------------------------------------------------------------------------------------------

KEEPALIVE_S = 1
DEADTIME_S = 4
WARNTIME_S = 2
INITDEAD_S = 8  # Heartbeat wants at least twice the deadtime
MONITOR_INTERVAL_S = 1
MONITOR_PROBE_TIMEOUT_S = 2
MONITOR_FAILURES_MAX = 2
FENCE_WAIT_S = 10  # the start script gives up if a fenced Orthanc has not exited by then
ORTHANC_READY_WAIT_S = 30
ORTHANC_STOP_WAIT_S = 5
UP_TIMEOUT_S = 60.0
RECOVER_TIMEOUT_S = 30.0
PEERS_TIMEOUT_S = 30.0
ECHO_TIMEOUT_S = 2.0  # one C-ECHO probe: connect, association and answer each
PROBE_INTERVAL_S = 0.2
HEARTBEAT_STOP_WAIT_S = 20.0  # a graceful shutdown runs the resources' stop scripts
HTTP_TIMEOUT_S = 20.0


def ha_cf(logfile: Path, peer_ip: str) -> str:
    """Heartbeat R1 with fast takeover (keepalive 1 s, deadtime 4 s), no automatic failback."""
    return "\n".join([
        f"logfile {logfile}",
        "use_logd no",
        f"keepalive {KEEPALIVE_S}",
        f"deadtime {DEADTIME_S}",
        f"warntime {WARNTIME_S}",
        f"initdead {INITDEAD_S}",
        "udpport 694",
        f"ucast {NODE_IFACE} {peer_ip}",
        "auto_failback off",
        "node nodea",
        "node nodeb",
        "crm off",
        "",
    ])


def monitor_script(node: str, state: Path, logfile: Path) -> str:
    return MONITOR_SCRIPT.format(
        node=node, state=state, log=logfile, vip=VIP, iface=NODE_IFACE, http_port=HTTP_PORT,
        interval_s=MONITOR_INTERVAL_S, probe_timeout_s=MONITOR_PROBE_TIMEOUT_S, failures_max=MONITOR_FAILURES_MAX,
        curl=CURL,
    )


GUARD_SCRIPT = """#!/bin/sh
# Bound over reboot, init, pkill and killall inside a lab node's mount namespace: refuse, and say so.
echo "$(date '+%H:%M:%S') REFUSED: $0 $*" >> {log}
echo "cluster lab guard: refused '$0 $*' (this node is a namespace on a shared host)" >&2
exit 1
"""

# The node's resource monitor (see the package docstring: Heartbeat R1 does not watch resources).  It runs in the
# node's namespaces, so /run/heartbeat.pid is this node's Heartbeat; it exits when Heartbeat is gone.
MONITOR_SCRIPT = """#!/bin/sh
# orthanc-mifas monitor for {node}: give up the resources after {failures_max} failed probes in a row.
log() {{ echo "$(date '+%H:%M:%S.%N' | cut -c1-12) monitor[{node}]: $*" >> {log}; }}
hb_pid() {{ tr -d ' ' < /run/heartbeat.pid 2>/dev/null; }}
log "started"
failures=0
while sleep {interval_s}; do
    pid=$(hb_pid)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        sleep 2  # Heartbeat may be writing its pid file right now
        pid=$(hb_pid)
        if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then log "heartbeat is gone; exiting"; exit 0; fi
    fi
    if [ -e {state}/started ] && ip -4 -o addr show dev {iface} | grep -q " {vip}/"; then
        if {curl} -s -f -o /dev/null -m {probe_timeout_s} http://127.0.0.1:{http_port}/system; then
            failures=0
        else
            failures=$((failures + 1))
            log "Orthanc did not answer GET /system ($failures of {failures_max})"
            if [ "$failures" -ge {failures_max} ]; then
                log "giving up the resources: stopping heartbeat (pid $pid)"
                touch {state}/unhealthy  # tells the stop script not to wait for a graceful Orthanc shutdown
                kill -TERM "$pid"
                failures=0
            fi
        fi
    else
        failures=0
    fi
done
"""

# The Heartbeat resource (LSB style: start|stop|status) running this node's Orthanc on the shared directory.
RESOURCE_SCRIPT = """#!/bin/sh
# orthanc-mifas for {node}.  start fences (kill -9) every other Orthanc of this lab first: STONITH stand-in.
ORTHANC={orthanc}
CONFIG={config}
STATE={state}
SHARED={shared}
log() {{ echo "$(date '+%H:%M:%S.%N' | cut -c1-12) orthanc-mifas[{node}] $*" >> $STATE/resource.log; }}
alive() {{ [ -n "$1" ] && [ -e /proc/$1 ] && ! grep -q ') Z' /proc/$1/stat 2>/dev/null; }}
lab_orthancs() {{
    # by command line too (not pgrep: the node's pkill guard is bound over the pgrep binary pkill links to)
    ps -eo pid=,args= | awk -v cfgs="{lab_configs}" -v bin="$ORTHANC" '
        BEGIN {{ n = split(cfgs, c, " "); for (i = 1; i <= n; i++) want[bin " " c[i]] = 1 }}
        {{ pid = $1; sub(/^ *[0-9]+ /, ""); if ($0 in want) print pid }}'
    pid=$(cut -d' ' -f1 $SHARED/orthanc.pid 2>/dev/null)
    [ -n "$pid" ] && alive "$pid" && tr '\\0' ' ' < /proc/$pid/cmdline | grep -q "^$ORTHANC " && echo "$pid"
}}
own_pid() {{
    pid=$(cat $STATE/orthanc.pid 2>/dev/null)
    [ -n "$pid" ] && alive "$pid" && [ "$(tr '\\0' ' ' < /proc/$pid/cmdline)" = "$ORTHANC $CONFIG " ] && echo "$pid"
}}
fence() {{
    pids=$(lab_orthancs | sort -u)
    [ -z "$pids" ] && return 0
    log "fencing: kill -9 $pids (holder: $(cat $SHARED/orthanc.pid 2>/dev/null))"
    kill -9 $pids 2>/dev/null
    i=0
    while [ $i -lt $(( {fence_wait_s} * 10 )) ]; do
        left=""
        for pid in $pids; do alive $pid && left="$left $pid"; done
        [ -z "$left" ] && {{ log "fenced"; return 0; }}
        sleep 0.1; i=$((i + 1))
    done
    log "fencing FAILED: $left still alive after {fence_wait_s} s"
    return 1
}}
start() {{
    own_pid > /dev/null && {{ log "start: already running"; return 0; }}
    fence || return 1
    rm -f $STATE/started $STATE/unhealthy
    cd $STATE
    TCP_NODELAY=1 setsid $ORTHANC $CONFIG >> {log} 2>&1 < /dev/null &
    pid=$!
    echo $pid > $STATE/orthanc.pid
    echo "$pid {node}" > $SHARED/orthanc.pid.tmp && mv $SHARED/orthanc.pid.tmp $SHARED/orthanc.pid
    i=0
    while [ $i -lt $(( {ready_wait_s} * 10 )) ]; do
        alive $pid || {{ log "start: Orthanc $pid exited while starting"; return 1; }}
        if /usr/bin/curl -s -f -o /dev/null -m 1 http://127.0.0.1:{http_port}/system; then
            touch $STATE/started; log "started Orthanc $pid"; return 0
        fi
        sleep 0.1; i=$((i + 1))
    done
    log "start: Orthanc $pid did not answer within {ready_wait_s} s"
    return 1
}}
stop() {{
    rm -f $STATE/started
    pid=$(own_pid)
    if [ -n "$pid" ] && [ -e $STATE/unhealthy ]; then
        log "Orthanc $pid failed its probes: kill -9"  # a hung Orthanc gets no grace, as a real cluster fences
        kill -9 $pid
        i=0
        while alive $pid && [ $i -lt $(( {stop_wait_s} * 10 )) ]; do sleep 0.1; i=$((i + 1)); done
    elif [ -n "$pid" ]; then
        log "stopping Orthanc $pid"
        kill -TERM $pid; kill -CONT $pid  # a frozen one must run to act on SIGTERM
        i=0
        while alive $pid && [ $i -lt $(( {stop_wait_s} * 10 )) ]; do sleep 0.1; i=$((i + 1)); done
        alive $pid && {{ log "Orthanc $pid ignored SIGTERM; kill -9"; kill -9 $pid; sleep 0.2; }}
    fi
    # never touch the peer's Orthanc here: only ours, and the shared pid file only while it names ours
    [ -n "$pid" ] && [ "$(cut -d' ' -f1 $SHARED/orthanc.pid 2>/dev/null)" = "$pid" ] && rm -f $SHARED/orthanc.pid
    rm -f $STATE/orthanc.pid $STATE/unhealthy
    alive "$pid" && {{ log "stop: Orthanc $pid is still alive"; return 1; }}
    return 0
}}
case "$1" in
    start) log "start"; start; rc=$?; log "start -> $rc"; exit $rc ;;
    stop) log "stop"; stop; rc=$?; log "stop -> $rc"; exit $rc ;;
    status) if own_pid > /dev/null; then echo "running"; exit 0; else echo "stopped"; exit 3; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
"""


def guard_script(logfile: Path) -> str:
    return GUARD_SCRIPT.format(log=logfile)


def resource_script(node: str, *, config: Path, orthanc_log: Path, state: Path, shared: Path,
                    lab_configs: list[Path]) -> str:
    """orthanc-mifas for `node`; `lab_configs` are both nodes' Orthanc configs (what the fencing looks for)."""
    return RESOURCE_SCRIPT.format(
        node=node, orthanc=ORTHANC_BINARY, config=config, log=orthanc_log, state=state, shared=shared,
        http_port=HTTP_PORT, lab_configs=" ".join(str(path) for path in lab_configs),
        fence_wait_s=FENCE_WAIT_S, ready_wait_s=ORTHANC_READY_WAIT_S, stop_wait_s=ORTHANC_STOP_WAIT_S,
    )
