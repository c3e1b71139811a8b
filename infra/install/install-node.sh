#!/usr/bin/env bash
# Installs a PlanetLite node on a Debian 12 machine, as root, from an unpacked release bundle:
# the Debian packages a node needs (no PostgreSQL, Redis or image-building tools), the bundled
# Node 24 and agent under /opt/planetlite/current, subordinate ids for the slivers, the systemd unit,
# and the enrollment with the token the site admin pasted. Run again, it upgrades in place: the
# node keeps its identity (STATE_DIR/node.json) and its slivers keep running.
#
#   ./install-node.sh --registry URL --token TOKEN --address PUBLIC_IP [--ca-pin sha256:HEX]
#                     [--hostname NAME] [--port-window 20000-29999]
#                     [--pool FILE|DEVICE] [--pool-size 20G] [--sliver-subnet 10.200.0.0/16]
#                     [--with-vm] [--no-start] [--prefix /opt/planetlite] [--root DIR]
#   ./install-node.sh                      # upgrade an enrolled node
#
# --with-vm also installs qemu-system-x86 for KVM slivers. --root DIR: see install-lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/install-lib.sh"

REGISTRY="" TOKEN="" ADDRESS="" CA_PIN="" HOSTNAME_ARG="" PORT_WINDOW="" WITH_VM=0 START=1
AGENT_ARGS=()
SLIVER_SUBNET=10.200.0.0/16
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) REGISTRY="$2"; shift 2 ;;
    --token) TOKEN="$2"; shift 2 ;;
    --address) ADDRESS="$2"; shift 2 ;;
    --ca-pin) CA_PIN="$2"; shift 2 ;;
    --hostname) HOSTNAME_ARG="$2"; shift 2 ;;
    --port-window) PORT_WINDOW="$2"; shift 2 ;;
    --pool|--pool-size) AGENT_ARGS+=("$1" "$2"); shift 2 ;;
    --sliver-subnet) SLIVER_SUBNET="$2"; AGENT_ARGS+=("$1" "$2"); shift 2 ;;
    --with-vm) WITH_VM=1; shift ;;
    --no-start) START=0; shift ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --root) TARGET_ROOT="$(realpath -m "$2")"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
need_root
STATE_DIR="$(R /var/lib/planetlite-agent)"
AGENT="$(R "$PREFIX")/current/bin/planetlite-agent"
UPGRADE=0
[ -f "$STATE_DIR/node.json" ] && UPGRADE=1
if [ "$UPGRADE" = 0 ] && { [ -z "$REGISTRY" ] || [ -z "$TOKEN" ] || [ -z "$ADDRESS" ]; }; then
  die "a new node needs --registry URL --token TOKEN --address PUBLIC_IP (from: planetlite site token SITE)"
fi
[[ "$SLIVER_SUBNET" =~ ^[0-9.]+/([0-9]{1,2})$ ]] && [ "${BASH_REMATCH[1]}" -le 30 ] || die "--sliver-subnet must look like 10.200.0.0/16"
SUBNET_BITS="${BASH_REMATCH[1]}"

# 1. Debian packages: LXC, btrfs, nftables and iproute2 (tc) for slivers; busybox-static for the
# agent's idmap probe; zstd/xz for image archives; python3 for the idmapped mounts of layered
# sliver roots, the VM jail and the agent's command forker.
if on_host; then
  apt_add lxc btrfs-progs nftables iproute2 procps util-linux tar zstd xz-utils busybox-static python3 ca-certificates
  [ "$WITH_VM" = 1 ] && apt_add qemu-system-x86
  [ -n "$APT_ADDED" ] && manifest_set node PACKAGES "$(manifest_get node PACKAGES) $APT_ADDED"
fi

# 2. Programs and unit. An upgrade replaces them while the agent runs; its restart below leaves
# the slivers running (KillMode=process).
install_prefix
manifest_set node PREFIX "$PREFIX"
install_unit planetlite-agent.service
ENV_FILE="$(R /etc/planetlite/agent.env)"
if [ ! -f "$ENV_FILE" ] || [ "${#AGENT_ARGS[@]}" -gt 0 ]; then
  mkdir -p "$(dirname "$ENV_FILE")"
  printf '# Extra flags of `planetlite-agent run` (the agent remembers them in its settings.json).\nPLANETLITE_AGENT_ARGS=%s\n' "${AGENT_ARGS[*]:-}" >"$ENV_FILE"
  chmod 644 "$ENV_FILE"
fi

# 3. Subordinate ids. With Debian's uidmap (LXD, podman and rootless tools pull it in) LXC maps
# slivers' ids through newuidmap, which allows only root's ranges in /etc/subuid and /etc/subgid.
# Reserve one block of 65536 per /30 of the sliver subnet plus one for the agent's probe, from
# 1000000 (the ids the agent uses without uidmap, so slivers keep theirs when uidmap comes later).
# A range root already has (LXD's, Incus's) is left alone: the agent checks its size at start.
slots=$(( (1 << (32 - SUBNET_BITS)) / 4 ))
[ "$slots" -le 65000 ] || slots=65000 # the 32-bit id space holds no more
count=$(( (slots + 1) * 65536 ))
for f in subuid subgid; do
  file="$(R /etc/$f)"
  if ! grep -Eq '^(root|0):' "$file" 2>/dev/null; then
    [ -e "$file" ] || { mkdir -p "$(dirname "$file")"; : >"$file"; chmod 644 "$file"; manifest_set node "CREATED_$f" 1; }
    printf 'root:1000000:%s\n' "$count" >>"$file"
    manifest_set node "LINE_$f" "root:1000000:$count"
    log "reserved ids 1000000-$((1000000 + count - 1)) for root in /etc/$f ($slots slivers)"
  fi
done

# 4. Enrollment, once: an upgrade keeps the node's key and id.
if [ "$UPGRADE" = 1 ]; then
  log "already enrolled: $(sed -n 's/.*"hostname": *"\([^"]*\)".*/\1/p' "$STATE_DIR/node.json") keeps its identity"
else
  args=(enroll --registry "$REGISTRY" --token "$TOKEN" --address "$ADDRESS" --state-dir "$STATE_DIR")
  [ -n "$CA_PIN" ] && args+=(--ca-pin "$CA_PIN")
  [ -n "$HOSTNAME_ARG" ] && args+=(--hostname "$HOSTNAME_ARG")
  [ -n "$PORT_WINDOW" ] && args+=(--port-window "$PORT_WINDOW")
  "$AGENT" "${args[@]}"
fi

# 5. Start (or restart after an upgrade).
if have_systemd; then
  systemctl daemon-reload
  systemctl enable planetlite-agent.service >/dev/null 2>&1
  if [ "$START" = 1 ]; then
    systemctl restart planetlite-agent.service
    log "planetlite-agent is running: systemctl status planetlite-agent; journalctl -u planetlite-agent"
  fi
else
  log "no systemd here: start the agent with  $AGENT run --state-dir $STATE_DIR ${AGENT_ARGS[*]:-}"
fi
log "node installed; remove it with: $(R "$PREFIX")/current/uninstall.sh --node$( [ "$TARGET_ROOT" = / ] || printf ' --root %s' "$TARGET_ROOT") [--keep-data]"
