#!/usr/bin/env bash
# Quick start: install MIFAS Viewer into a virtualenv (.venv) and launch it on the demo study.
# Extra arguments go to mifas-viewer, e.g.  bash packaging/run.sh --screenshot demo.png
set -euo pipefail
source "$(dirname "$0")/lib/deps.sh"
apt_ensure python3-venv "${QT_RUNTIME_PACKAGES[@]}"
venv_ensure ""
if [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -z "${QT_QPA_PLATFORM:-}" ]; then
  # No screen (a server, CI): render offscreen so that --screenshot still works.
  export QT_QPA_PLATFORM=offscreen
fi
exec "$MIFAS_VENV/bin/mifas-viewer" --demo "$@"
