#!/usr/bin/env bash
# Removes what install-node.sh and/or install-registry.sh added, as root: the services, units,
# env files, the programs under the prefix, the subordinate id lines, the system user, and the
# Debian packages they installed. The node's slivers are stopped and released first
# (planetlite-agent release). Without --keep-data the slivers' pool, the node's state (its key),
# the registry's data dir and its PostgreSQL database and role go too.
#
#   ./uninstall.sh [--node] [--registry] [--keep-data] [--root DIR]
#
# With neither --node nor --registry: whatever is installed. --root DIR: see install-lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/install-lib.sh"

NODE=0 REGISTRY=0 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --node) NODE=1; shift ;;
    --registry) REGISTRY=1; shift ;;
    --keep-data) KEEP=1; shift ;;
    --root) TARGET_ROOT="$(realpath -m "$2")"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
need_root
if [ "$NODE$REGISTRY" = 00 ]; then
  [ -f "$(manifest node)" ] && NODE=1
  [ -f "$(manifest registry)" ] && REGISTRY=1
  [ "$NODE$REGISTRY" != 00 ] || die "nothing of PlanetLite is installed here ($(R /etc/planetlite) has no *.installed)"
fi
PACKAGES=""

stop_unit() {
  if have_systemd; then systemctl disable --now "$1" >/dev/null 2>&1 || true; fi
  rm -f "$(R /etc/systemd/system)/$1"
}

if [ "$NODE" = 1 ]; then
  [ -f "$(manifest node)" ] || die "no node installed here"
  prefix="$(manifest_get node PREFIX)"
  stop_unit planetlite-agent.service
  state="$(R /var/lib/planetlite-agent)"
  if [ -d "$state" ]; then
    "$(R "$prefix")/current/bin/planetlite-agent" release --state-dir "$state" $( [ "$KEEP" = 1 ] && echo --keep-data )
  fi
  for f in subuid subgid; do
    line="$(manifest_get node "LINE_$f")"
    file="$(R /etc/$f)"
    [ -n "$line" ] && [ -f "$file" ] && sed -i "\|^$line\$|d" "$file"
    [ "$(manifest_get node "CREATED_$f")" = 1 ] && [ ! -s "$file" ] && rm -f "$file"
  done
  rm -f "$(R /etc/planetlite/agent.env)"
  rm -rf "$(R /var/cache/planetlite-kvm)"
  PACKAGES="$(manifest_get node PACKAGES)"
  rm -f "$(manifest node)"
  log "node removed$( [ "$KEEP" = 1 ] && printf '; kept %s (enrollment, pool, ledger)' "$state")"
fi

if [ "$REGISTRY" = 1 ]; then
  [ -f "$(manifest registry)" ] || die "no registry installed here"
  prefix="$(manifest_get registry PREFIX)"
  stop_unit planetlite-registry.service
  if [ "$KEEP" = 0 ]; then
    if on_host && [ "$(manifest_get registry DB_CREATED)" = 1 ]; then
      runuser -u postgres -- dropdb --if-exists planetlite
      runuser -u postgres -- psql -qc 'DROP ROLE IF EXISTS planetlite'
    fi
    for svc in postgresql redis-server; do
      [ "$(manifest_get registry "STARTED_$svc")" = 1 ] || continue
      if have_systemd; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; else service "$svc" stop >/dev/null 2>&1 || true; fi
      # A cluster started by hand (start.conf: manual) is stopped the same way.
      if [ "$svc" = postgresql ] && command -v pg_lsclusters >/dev/null; then
        pg_lsclusters --no-header | while read -r v c _; do pg_ctlcluster "$v" "$c" stop >/dev/null 2>&1 || true; done
      fi
      log "stopped $svc (the install had started it)"
    done
    rm -rf "$(R /var/lib/planetlite-registry)"
    rm -f "$(R /etc/planetlite/registry.env)"
    PACKAGES="$PACKAGES $(manifest_get registry PACKAGES)"
  fi
  on_host && [ "$(manifest_get registry USER_CREATED)" = 1 ] && userdel planetlite
  rm -f "$(manifest registry)"
  log "registry removed$( [ "$KEEP" = 1 ] && printf '; kept its database, %s and %s' "$(R /var/lib/planetlite-registry)" "$(R /etc/planetlite/registry.env)")"
fi

# The programs go with the last of the two.
if [ ! -f "$(manifest node)" ] && [ ! -f "$(manifest registry)" ]; then
  remove_prefix "${prefix:-$PREFIX}"
  rmdir "$(R /etc/planetlite)" 2>/dev/null || true
fi
# In a --root tree, the parents the install made go too when nothing else is in them.
if ! on_host; then
  for d in /etc/systemd/system /etc/systemd /etc /var/lib /var/cache /var /opt; do rmdir "$(R "$d")" 2>/dev/null || true; done
fi
if on_host && have_systemd; then systemctl daemon-reload; fi
# shellcheck disable=SC2086
if on_host && [ -n "${PACKAGES// /}" ]; then
  log "apt: removing what the install added: $PACKAGES"
  DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq $PACKAGES </dev/null >/dev/null
fi
