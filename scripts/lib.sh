# shellcheck shell=bash
# Settings and helpers shared by the volttron-dr scripts. Source it; do not run it.
#
# As root, everything of the platform runs as the service user VDR_USER (VOLTTRON refuses root) and lives
# under its home VDR_STATE; as a normal user, everything runs as that user under ~/.local/state/volttron-dr.

VDR_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATH="$PATH:/usr/sbin:/sbin"
VDR_PY=${VDR_PY:-/usr/bin/python3.11}
if [ "$(id -u)" -eq 0 ]; then
  VDR_USER=${VDR_USER:-volttron-dr}
  VDR_STATE=${VDR_STATE:-/var/lib/volttron-dr}
else
  VDR_USER=$(id -un)
  VDR_STATE=${VDR_STATE:-${XDG_STATE_HOME:-$HOME/.local/state}/volttron-dr}
fi
VDR_VENV=$VDR_STATE/venv
VDR_STAGE=$VDR_STATE/stage
VDR_PINS=$VDR_REPO/platform-config/pins.txt
export VDR_REPO VDR_STATE VDR_USER VDR_VENV VDR_STAGE

is_root() { [ "$(id -u)" -eq 0 ]; }

die() { echo "error: $*" >&2; exit 1; }

_vdr_t0=${EPOCHREALTIME/,/.}
step() { printf '== [%6.1fs] %s\n' "$(awk -v a="${EPOCHREALTIME/,/.}" -v b="$_vdr_t0" 'BEGIN{print a-b}')" "$*"; }

site_home() { echo "$VDR_STATE/sites/$1/vhome"; }
site_dir() { echo "$VDR_STATE/sites/$1"; }

# Run a command as the service user, with its own HOME, caches and TMPDIR, the venv active and a cwd it can
# enter. runuser keeps root's other environment (proxies, CA variables, PIP_*). VOLTTRON_HOME comes from
# VDR_SITE when set.
asvc() {
  local vhome=""
  [ -n "${VDR_SITE:-}" ] && vhome=$(site_home "$VDR_SITE")
  local envs=(env -u PYTHONPATH -u PYTHONHOME -u PYENV_VERSION -u PYTHONDONTWRITEBYTECODE
    HOME="$VDR_STATE" XDG_CACHE_HOME="$VDR_STATE/.cache" XDG_CONFIG_HOME="$VDR_STATE/.config"
    XDG_DATA_HOME="$VDR_STATE/.local/share" POETRY_CACHE_DIR="$VDR_STATE/.cache/pypoetry"
    TMPDIR="$VDR_STATE/tmp" VIRTUAL_ENV="$VDR_VENV" PATH="$VDR_VENV/bin:/usr/local/bin:/usr/bin:/bin"
    ${vhome:+VOLTTRON_HOME="$vhome"} ${VDR_INDEX_URL:+PIP_INDEX_URL="$VDR_INDEX_URL"}
    ${VDR_PIP_CERT:+REQUESTS_CA_BUNDLE="${REQUESTS_CA_BUNDLE:-$VDR_PIP_CERT}"})
  if is_root; then
    ( cd "$VDR_STATE" && exec runuser -u "$VDR_USER" -- "${envs[@]}" "$@" )
  else
    ( cd "$VDR_STATE" && exec "${envs[@]}" "$@" )
  fi
}

# VDR_INDEX_URL / VDR_PIP_CERT: the index `pip install` would use (PIP_INDEX_URL, any pip.conf, else PyPI).
# Read as the invoking user: root's pip configuration counts, and is handed on to the service user.
pip_settings() {
  [ -n "${VDR_INDEX_URL:-}" ] && return 0
  local py=$VDR_VENV/bin/python
  [ -x "$py" ] || py=$VDR_PY
  read -r VDR_INDEX_URL VDR_PIP_CERT < <("$py" -I -B -c 'from pip._internal.commands import create_command as c
o = c("install").parse_args([])[0]; print(o.index_url, o.cert or "")')
  export VDR_INDEX_URL VDR_PIP_CERT
}

# Copy a folder of the checkout to a staging folder the service user owns (the checkout may be unreadable
# to it). Streams with tar; the copy is replaced whole.
stage_dir() {
  local src=$1 dst=$2
  asvc mkdir -p "$(dirname "$dst")"
  asvc rm -rf "$dst.new"
  asvc mkdir -p "$dst.new"
  tar -C "$src" -cf - --exclude=./dist --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache . |
    asvc tar -C "$dst.new" -xf -
  asvc sh -c 'rm -rf "$0" && mv "$0.new" "$0"' "$dst"
}

platform_pid() {  # prints the PID of a site's running platform
  local p
  p=$(cat "$(site_home "$1")/VOLTTRON_PID" 2>/dev/null) || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}

# PIDs of every process that runs with this site's VOLTTRON_HOME (the platform and its agents).
site_pids() {
  local vhome f pid
  vhome=$(site_home "$1")
  for f in $(grep -zlxF "VOLTTRON_HOME=$vhome" /proc/[0-9]*/environ 2>/dev/null); do
    pid=${f#/proc/}; pid=${pid%/environ}
    # leave out this shell and its own command-substitution subshells (they inherit the caller's environment)
    [ "$pid" = "$$" ] && continue
    [ "$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null)" = "$$" ] && continue
    kill -0 "$pid" 2>/dev/null && echo "$pid"
  done
}

# Install Debian packages (as root) and return; never waits on a terminal. `timeout` alone runs apt-get in a
# background process group, and a terminal stops a background process that touches it (SIGTTOU): an interactive
# run would hang for good. --foreground keeps apt-get in the terminal's foreground group, stdin comes from
# /dev/null and debconf asks nothing.
apt_install() {
  DEBIAN_FRONTEND=noninteractive timeout --foreground 600 apt-get update -qq </dev/null || return 1
  DEBIAN_FRONTEND=noninteractive timeout --foreground 900 apt-get install -y -qq "$@" </dev/null >/dev/null
}

stamp_of() {  # a content hash of the given files
  cat "$@" 2>/dev/null | sha256sum | cut -c1-16
}
