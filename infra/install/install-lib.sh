# shellcheck shell=bash
# Shared by install-node.sh, install-registry.sh and uninstall.sh in the release bundle (built by
# scripts/release.sh). Source it; do not execute it.
#
# --root DIR installs into DIR as if it were / (for tests and image builders): then nothing acts
# on the running system (no apt, no systemctl, no users, no PostgreSQL role) and the units name
# paths under DIR, so that `systemd-analyze verify` and the installed daemons work from there.
set -euo pipefail

log() { printf '==> %s\n' "$*"; }
warn() { printf '==> WARNING: %s\n' "$*" >&2; }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }

BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
TARGET_ROOT=/
PREFIX=/opt/planetlite

# True when installing onto the running system (not --root).
on_host() { [ "$TARGET_ROOT" = / ]; }
# A path of the target system, as this machine sees it.
R() { printf '%s%s' "${TARGET_ROOT%/}" "$1"; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "run this as root (sudo $0 …)"
}

# Debian packages that are missing get installed; their names are added to APT_ADDED.
APT_ADDED=""
apt_add() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
  APT_ADDED="${APT_ADDED:+$APT_ADDED }${missing[*]}"
}

# Copies the bundle's programs to PREFIX/releases/VERSION (under the target root) and points
# PREFIX/current at it with one rename, so a daemon's next start finds the new version complete.
# The units run PREFIX/current/bin/…; other things in PREFIX (a developer's node24) are not ours.
install_prefix() {
  [ -x "$BUNDLE/node/bin/node" ] && [ -f "$BUNDLE/lib/agent.mjs" ] || die "run this from an unpacked release bundle (bash scripts/release.sh builds one)"
  local dest version rel d
  dest="$(R "$PREFIX")"
  version="$(head -1 "$BUNDLE/VERSION" | tr '+' '-')"
  rel="$dest/releases/$version"
  [ "$(readlink -f "$BUNDLE")" != "$(readlink -f "$rel")" ] || die "run the installer from the unpacked bundle, not from $rel"
  mkdir -p "$dest/releases"
  rm -rf "$rel.new.$$"
  mkdir -p "$rel.new.$$"
  cp -a "$BUNDLE"/{bin,lib,node,migrations,static,systemd,package.json,VERSION} "$rel.new.$$/"
  cp -a "$BUNDLE"/*.sh "$rel.new.$$/"
  chmod 755 "$rel.new.$$"
  rm -rf "$rel"
  mv "$rel.new.$$" "$rel"
  ln -sfn "releases/$version" "$dest/current.new.$$"
  mv -T "$dest/current.new.$$" "$dest/current"
  # Running daemons keep what they loaded; the files of older releases can go.
  for d in "$dest/releases"/*; do [ "$d" = "$rel" ] || rm -rf "$d"; done
  log "installed $(head -1 "$rel/VERSION") in $dest/current"
}

# Removes what install_prefix made; PREFIX itself only when nothing else is left in it.
remove_prefix() {
  local dest
  dest="$(R "$1")"
  rm -rf "$dest/current" "$dest/releases"
  rmdir "$dest" 2>/dev/null || true
}

# Writes unit NAME with the install's paths.
install_unit() {
  local name="$1" dir
  dir="$(R /etc/systemd/system)"
  mkdir -p "$dir"
  sed -e "s|/opt/planetlite/|$(R "$PREFIX")/|g" \
      -e "s|/etc/planetlite/|$(R /etc/planetlite/)|g" \
      -e "s|/var/lib/planetlite-agent|$(R /var/lib/planetlite-agent)|g" \
      -e "s| --data-dir /var/lib/planetlite-registry| --data-dir $(R /var/lib/planetlite-registry)|g" \
      "$BUNDLE/systemd/$name" >"$dir/$name"
  chmod 644 "$dir/$name"
}

# True when systemd runs this machine (PID 1); else the installer says how to start by hand.
have_systemd() { on_host && [ -d /run/systemd/system ]; }

# Records KEY=VALUE lines of what an install added, for uninstall.sh.
manifest() { printf '%s/%s.installed' "$(R /etc/planetlite)" "$1"; }
manifest_get() { sed -n "s/^$2=//p" "$(manifest "$1")" 2>/dev/null | tail -1; }
manifest_set() {
  local file
  file="$(manifest "$1")"
  mkdir -p "$(dirname "$file")"
  touch "$file"
  chmod 600 "$file"
  sed -i "/^$2=/d" "$file"
  printf '%s=%s\n' "$2" "$3" >>"$file"
}
