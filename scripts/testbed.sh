#!/usr/bin/env bash
# A multi-node PlanetLite testbed on one machine, for trying it out or developing against it: a
# registry (embedded database) and N nodes, each a network namespace with its own public address,
# btrfs pool, lxcpath and agent (`planetlite-agent run --netns NS`: the agent runs here, its
# slivers and their nftables table live in the node's namespace).
#
#   bash scripts/testbed.sh up N      # N from 1 to 50; prints how to reach everything
#   bash scripts/testbed.sh status
#   bash scripts/testbed.sh down      # stops the agents and the registry, releases every node
#                                     # (slivers, pools, tables), deletes namespaces and data
#
# Node i is the namespace pl-tb-node<i> at 198.19.<i>.1 (this machine is 198.19.<i>.2), enrolled
# as node<i>.tb.planetlite.test in the site `tb`. PLANETLITE_TESTBED_LISTEN (127.0.0.1:8090) moves
# the registry. It serves HTTPS with its own CA, which the CLI and every node pin, as on a real site.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(repo_root)"
cd "$ROOT"

DATA="$ROOT/.data/testbed"
NODES_DIR=/var/lib/planetlite/testbed   # outside the checkout: slivers traverse it (see demo.sh)
LISTEN="${PLANETLITE_TESTBED_LISTEN:-127.0.0.1:8090}"
REGISTRY="https://$LISTEN"
CA="$DATA/registry/tls/ca.pem"   # the registry's own CA, made on its first start
export PLANETLITE_CONFIG="$DATA/cli-config.json"
export PLANETLITE_REGISTRY="$REGISTRY"
ADMIN_EMAIL=admin@tb.planetlite.test
ADMIN_PASSWORD=testbed-admin-password
pl() { "$ROOT/node_modules/.bin/planetlite" "$@"; }
agent() { "$ROOT/node_modules/.bin/planetlite-agent" "$@"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
json() { node -e "const d = JSON.parse(require('fs').readFileSync(0, 'utf8')); console.log($1)"; }

stop_pid() {
  local f="$1" pid
  alive "$f" || { rm -f "$f"; return 0; }
  pid="$(cat "$f")"
  kill "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

down() {
  local dir i ns failed=0
  for dir in "$NODES_DIR"/node*; do
    [ -d "$dir" ] || continue
    i="${dir##*/node}"
    ns="pl-tb-node$i"
    stop_pid "$DATA/agent$i.pid"
    # The agent keeps slivers, pool and table over a stop; release takes them all, and the state
    # dir. Never rm -rf a node dir: its pool may still be mounted there.
    if agent release --state-dir "$dir" >/dev/null; then
      log "node$i: released"
    else
      warn "node$i: release of $dir failed (above); left as it is"
      failed=1
    fi
    ip netns del "$ns" 2>/dev/null || true
  done
  for ns in $(ip netns list | awk '/^pl-tb-node[0-9]+/ {print $1}'); do ip netns del "$ns"; done
  rmdir "$NODES_DIR" 2>/dev/null || true
  stop_pid "$DATA/registry.pid"
  [ "$failed" = 0 ] || die "testbed: down, but some node was not released (see above)"
  rm -rf "$DATA"
  log "testbed: down"
}

status() {
  alive "$DATA/registry.pid" || { echo "testbed: down"; return 0; }
  echo "registry $REGISTRY (pid $(cat "$DATA/registry.pid"))"
  pl node ls
}

up() {
  local n="$1" i ns dir token
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 50 ] || die "up takes a number of nodes from 1 to 50"
  alive "$DATA/registry.pid" && die "the testbed is already up (bash scripts/testbed.sh down first)"
  [ "$(id -u)" -eq 0 ] || die "run as root: nodes are network namespaces, btrfs pools and LXC"
  bash scripts/setup.sh >/dev/null
  mkdir -p "$DATA" "$NODES_DIR"
  chmod 711 /var/lib/planetlite "$NODES_DIR"

  log "registry: $REGISTRY, embedded database in $DATA/registry"
  PLANETLITE_ADMIN_EMAIL="$ADMIN_EMAIL" PLANETLITE_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
    "$ROOT/node_modules/.bin/planetlite-registry" serve --listen "$LISTEN" --data-dir "$DATA/registry" >"$DATA/registry.log" 2>&1 &
  echo $! >"$DATA/registry.pid"
  for _ in $(seq 1 150); do
    [ -f "$CA" ] && curl -fsS --cacert "$CA" "$REGISTRY/healthz" >/dev/null 2>&1 && break
    alive "$DATA/registry.pid" || { cat "$DATA/registry.log" >&2; die "the registry exited (log above)"; }
    sleep 0.2
  done
  # The pin of the registry's CA (sha256 of its public key), as `planetlite site token` prints it.
  local pin
  pin="sha256:$(openssl x509 -in "$CA" -pubkey -noout | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1)"
  PLANETLITE_PASSWORD="$ADMIN_PASSWORD" pl login --email "$ADMIN_EMAIL" --ca-pin "$pin" >/dev/null
  pl site create tb --name "Testbed on one machine" --max-slices 20 --max-slivers $((n * 20)) >/dev/null
  [ -f "$DATA/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "$ADMIN_EMAIL" -f "$DATA/id_ed25519"
  pl key add "$DATA/id_ed25519.pub" >/dev/null
  bash infra/images/tiny/build.sh "$DATA/tiny.tar" >/dev/null

  for i in $(seq 1 "$n"); do
    ns="pl-tb-node$i"
    dir="$NODES_DIR/node$i"
    ip netns add "$ns"
    ip link add "pl-tb-h$i" type veth peer name "pl-tb-n$i" netns "$ns"
    ip addr add "198.19.$i.2/24" dev "pl-tb-h$i"
    ip link set "pl-tb-h$i" up
    ip -n "$ns" addr add "198.19.$i.1/24" dev "pl-tb-n$i"
    ip -n "$ns" link set "pl-tb-n$i" up
    ip -n "$ns" link set lo up
    token="$(pl site token tb --json | json d.token)"
    agent enroll --registry "$REGISTRY" --token "$token" --ca-pin "$pin" --address "198.19.$i.1" \
      --hostname "node$i.tb.planetlite.test" --state-dir "$dir" >/dev/null
    agent image import tiny "$DATA/tiny.tar" --state-dir "$dir" --pool-size 2G >/dev/null
    # The program itself, not a function: $! must be the agent's pid.
    "$ROOT/node_modules/.bin/planetlite-agent" run --state-dir "$dir" --pool-size 2G --sliver-subnet "10.210.$i.0/24" --netns "$ns" --vm off >"$DATA/agent$i.log" 2>&1 &
    echo $! >"$DATA/agent$i.pid"
    log "node$i: namespace $ns at 198.19.$i.1, state in $dir, log $DATA/agent$i.log"
  done
  for _ in $(seq 1 150); do
    [ "$(pl node ls --json | json "d.filter((x) => x.state === 'online' && x.capabilities.lxc).length")" = "$n" ] && break
    sleep 0.2
  done

  cat <<TXT

Testbed up: a registry and $n node(s).
$(pl node ls)

Use it (the CLI is logged in as the admin $ADMIN_EMAIL, password $ADMIN_PASSWORD):
  export PLANETLITE_CONFIG=$PLANETLITE_CONFIG
  npx planetlite slice create tb_try --description "Trying PlanetLite" --url https://example.org --image tiny
  npx planetlite sliver create tb_try node1.tb.planetlite.test --wait
  ssh -i $DATA/id_ed25519 -p PORT tb_try@198.19.1.1      # PORT: the sliver's ssh port above
API docs: $REGISTRY/docs (its CA: $CA, pin $pin)      Take it all down: bash scripts/testbed.sh down
TXT
}

case "${1:-}" in
  up) up "${2:-}" ;;
  down) down ;;
  status) status ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; [ "${1:-}" = -h ] || [ "${1:-}" = --help ] || exit 2 ;;
esac
