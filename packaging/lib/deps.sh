# Shared by packaging/run.sh and packaging/test.sh (sourced, not run).
# Installs what is missing, never more: Debian packages via apt, Python packages into a virtualenv.

MIFAS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MIFAS_VENV="${MIFAS_VENV:-$MIFAS_ROOT/.venv}"

# Qt's xcb platform plugin needs these on a bare Debian 12; a desktop already has them.
QT_RUNTIME_PACKAGES=(libgl1 libegl1 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
  libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0)

say() { printf '%s\n' "mifas: $*" >&2; }
die() { say "$*"; exit 1; }

# apt_ensure PKG... : install the Debian packages that are not installed yet.
apt_ensure() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing system packages (${missing[*]}) and no apt-get to install them"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "missing system packages (${missing[*]}); run as root or install sudo"
    sudo=(sudo)
  fi
  say "installing system packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
  # Package scripts may try to start services (Orthanc's does); the tests start their own processes instead.
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null || die "apt-get install failed for: ${missing[*]}"
}

# venv_ensure EXTRAS : a virtualenv with the project installed (editable) plus the given extras, e.g. "[test]".
venv_ensure() {
  local extras="${1:-}"
  if [ ! -x "$MIFAS_VENV/bin/python" ]; then
    say "creating virtualenv $MIFAS_VENV"
    python3 -m venv "$MIFAS_VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  fi
  local stamp="$MIFAS_VENV/.mifas-installed$extras"
  # Reinstall only when pyproject.toml changed since the last install.
  if [ ! -f "$stamp" ] || [ "$MIFAS_ROOT/pyproject.toml" -nt "$stamp" ]; then
    say "installing Python packages into $MIFAS_VENV"
    "$MIFAS_VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$MIFAS_VENV/bin/python" -m pip install -q -e "$MIFAS_ROOT$extras" || die "pip install failed"
    touch "$stamp"
  fi
}

# lab_ensure : mifas-lab (packaging/lab) on the virtualenv's PATH beside mifas-viewer and mifas-pacs.
lab_ensure() {
  ln -sfn "$MIFAS_ROOT/packaging/lab/mifas-lab" "$MIFAS_VENV/bin/mifas-lab"
}
