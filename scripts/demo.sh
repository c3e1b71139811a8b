#!/usr/bin/env bash
# The main job: set everything up, then walk the path a testbed's people take.
# - A registry starts on its embedded database.
# - An admin creates a site and its PI. The PI logs in, adds an ssh key and creates a slice.
# - The site's node, a network namespace standing for a machine, enrolls and runs an agent.
# - The PI adds a sliver on it, and the demo sshes into that sliver through its forwarded
#   port, exactly as an experimenter would.
# Idempotent: run it as often as you like.
#
#   bash scripts/demo.sh                  # data under .data/demo, registry on 127.0.0.1:8080 (or PLANETLITE_LISTEN)
#   KEEP_RUNNING=1 bash scripts/demo.sh   # leave registry, agent and sliver up afterwards
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(repo_root)"
cd "$ROOT"

bash scripts/setup.sh

DATA="$ROOT/.data/demo"
# Outside the checkout: unprivileged slivers must traverse every directory above their lxcpath,
# and a checkout under /root (mode 0700) would not let them.
AGENT_DIR=/var/lib/planetlite/demo-agent
LISTEN="${PLANETLITE_LISTEN:-127.0.0.1:8080}"
REGISTRY="https://$LISTEN"
mkdir -p "$DATA"
export PLANETLITE_CONFIG="$DATA/cli-config.json"   # the demo's CLI login, kept apart from yours
export PLANETLITE_REGISTRY="$REGISTRY"
export PLANETLITE_ADMIN_EMAIL="${PLANETLITE_ADMIN_EMAIL:-admin@demo.planetlite.test}"
export PLANETLITE_ADMIN_PASSWORD="${PLANETLITE_ADMIN_PASSWORD:-demo-admin-password}"
PI_EMAIL="pi@demo.planetlite.test"
PI_PASSWORD="demo-pi-password"
pl() { "$ROOT/node_modules/.bin/planetlite" "$@"; }

if curl -sk -o /dev/null "$REGISTRY/healthz" 2>/dev/null || curl -s -o /dev/null "http://$LISTEN/" 2>/dev/null; then
  die "something already answers on $LISTEN; stop it or set PLANETLITE_LISTEN=127.0.0.1:PORT"
fi

# The node's enrollment belongs to this registry's database: a new database means a new node.
forget_node() {
  umount --recursive "$AGENT_DIR/pool" 2>/dev/null || true
  for dev in $(losetup -j "$AGENT_DIR/pool.img" 2>/dev/null | cut -d: -f1); do losetup -d "$dev" 2>/dev/null || true; done
  rm -rf "$AGENT_DIR"
}
if [ ! -d "$DATA/registry" ] && [ -d "$AGENT_DIR" ]; then forget_node; fi

log "registry: starting on $LISTEN (HTTPS, its own CA) with its embedded database in $DATA/registry"
"$ROOT/node_modules/.bin/planetlite-registry" serve --listen "$LISTEN" --data-dir "$DATA/registry" >"$DATA/registry.log" 2>&1 &
REGISTRY_PID=$!
AGENT_PID=""
NODE_NS=pl-demo-node
NODE_ADDR=198.18.250.1      # the node's public address, inside its namespace
HOST_ADDR=198.18.250.2      # this machine's end of the link to it
stop_all() {
  [ -n "${KEEP_RUNNING:-}" ] && return 0
  if [ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null; then
    # Slivers first, so the agent tears them down; then the agent, the node, the registry.
    for id in $(pl sliver ls demo_hello --json 2>/dev/null | node -e 'for (const s of JSON.parse(require("fs").readFileSync(0,"utf8"))) console.log(s.id)' 2>/dev/null); do
      pl sliver delete "$id" >/dev/null 2>&1 || true
    done
    for _ in $(seq 1 100); do
      [ "$(pl sliver ls demo_hello --json 2>/dev/null)" = "[]" ] && break
      sleep 0.2
    done
    kill "$AGENT_PID" 2>/dev/null || true
    wait "$AGENT_PID" 2>/dev/null || true
  fi
  umount --recursive "$AGENT_DIR/pool" 2>/dev/null || true
  for dev in $(losetup -j "$AGENT_DIR/pool.img" 2>/dev/null | cut -d: -f1); do losetup -d "$dev" 2>/dev/null || true; done
  ip netns del "$NODE_NS" 2>/dev/null || true
  if kill -0 "$REGISTRY_PID" 2>/dev/null; then
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
  fi
}
trap stop_all EXIT
CA="$DATA/registry/tls/ca.pem"   # made by the registry on its first start, kept for later ones
for _ in $(seq 1 150); do
  [ -f "$CA" ] && curl -fsS --cacert "$CA" "$REGISTRY/healthz" >/dev/null 2>&1 && break
  kill -0 "$REGISTRY_PID" 2>/dev/null || { cat "$DATA/registry.log" >&2; die "the registry exited; its log is above"; }
  sleep 0.2
done
curl -fsS --cacert "$CA" "$REGISTRY/healthz" >/dev/null || die "the registry did not come up; see $DATA/registry.log"
# The pin users and nodes check the registry's CA against (the sha256 of its public key); the
# registry logs it at start and `planetlite site token` prints it.
CA_PIN="sha256:$(openssl x509 -in "$CA" -pubkey -noout | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1)"
log "registry: its CA is $CA_PIN"
# A node enrolled with another registry (the demo of another checkout, say) trusts another CA and
# is unknown here: it is enrolled again.
if [ -f "$AGENT_DIR/node.json" ] &&
  [ "$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).ca_pin ?? "")' "$AGENT_DIR/node.json")" != "$CA_PIN" ]; then
  log "node: $AGENT_DIR was enrolled with another registry; enrolling it again"
  forget_node
fi

log "admin: log in (pinning the registry's CA) and create the site 'demo' and its PI"
PLANETLITE_PASSWORD="$PLANETLITE_ADMIN_PASSWORD" pl login --email "$PLANETLITE_ADMIN_EMAIL" --ca-pin "$CA_PIN" >/dev/null
pl site show demo >/dev/null 2>&1 || pl site create demo --name "Demo University" --max-slices 10 --max-slivers 100 >/dev/null
pl user ls --site demo --json | grep -q "\"$PI_EMAIL\"" ||
  PLANETLITE_NEW_PASSWORD="$PI_PASSWORD" pl user create --email "$PI_EMAIL" --name "Demo PI" --site demo --role pi --role user >/dev/null

log "pi: log in, add an ssh key, create the slice demo_hello"
PLANETLITE_PASSWORD="$PI_PASSWORD" pl login --email "$PI_EMAIL" >/dev/null
KEY="$DATA/id_ed25519"
[ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C "$PI_EMAIL" -f "$KEY"
pl key ls --json | grep -q "$(cut -d' ' -f2 "$KEY.pub")" || pl key add "$KEY.pub" >/dev/null
pl slice show demo_hello >/dev/null 2>&1 ||
  pl slice create demo_hello --description "Hello, PlanetLite" --url "https://example.org/hello" --image tiny >/dev/null

log "node: a network namespace ($NODE_NS, address $NODE_ADDR) enrolls and runs the agent"
ip netns del "$NODE_NS" 2>/dev/null || true
ip netns add "$NODE_NS"
ip link add pl-demo-h type veth peer name pl-demo-n netns "$NODE_NS"
ip addr add "$HOST_ADDR/24" dev pl-demo-h
ip link set pl-demo-h up
ip -n "$NODE_NS" addr add "$NODE_ADDR/24" dev pl-demo-n
ip -n "$NODE_NS" link set pl-demo-n up
ip -n "$NODE_NS" link set lo up
agent() { "$ROOT/node_modules/.bin/planetlite-agent" "$@"; }
if [ ! -f "$AGENT_DIR/node.json" ]; then
  # What a site admin gets: a one-time token with the registry's URL and CA pin, and the command.
  TOKEN_JSON="$(pl site token demo --json)"
  field() { node -e "console.log(JSON.parse(require('fs').readFileSync(0,'utf8')).$1)" <<<"$TOKEN_JSON"; }
  agent enroll --registry "$(field registry)" --token "$(field token)" --ca-pin "$(field ca_pin)" --address "$NODE_ADDR" --hostname node1.demo.planetlite.test --state-dir "$AGENT_DIR" >/dev/null
fi
bash infra/images/tiny/build.sh "$DATA/tiny.tar"
agent image import tiny "$DATA/tiny.tar" --state-dir "$AGENT_DIR" --pool "$AGENT_DIR/pool.img" --pool-size 2G >/dev/null
PLANETLITE_LOG_LEVEL="${PLANETLITE_AGENT_LOG_LEVEL:-info}" "$ROOT/node_modules/.bin/planetlite-agent" run --state-dir "$AGENT_DIR" --pool "$AGENT_DIR/pool.img" --pool-size 2G --sliver-subnet 10.201.0.0/24 --netns "$NODE_NS" >"$DATA/agent.log" 2>&1 &
AGENT_PID=$!

log "pi: add a sliver of demo_hello on the node and wait for it to run"
NODE_ID="$(pl node ls --json | node -e 'const n = JSON.parse(require("fs").readFileSync(0,"utf8")).find((n) => n.hostname === "node1.demo.planetlite.test"); console.log(n.id)')"
# The node can take LXC slivers once its agent's drivers have checked and it has reported so.
for _ in $(seq 1 300); do
  pl node show "$NODE_ID" --json | node -e 'process.exit(JSON.parse(require("fs").readFileSync(0,"utf8")).capabilities.lxc ? 0 : 1)' && break
  sleep 0.2
done
[ "$(pl sliver ls demo_hello --json)" != "[]" ] || pl sliver create demo_hello "$NODE_ID" --wait --timeout 120 >/dev/null
PORT="$(pl sliver ls demo_hello --json | node -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8"))[0].ssh.port)')"
SSH=(ssh -i "$KEY" -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR)
for _ in $(seq 1 50); do "${SSH[@]}" "demo_hello@$NODE_ADDR" true 2>/dev/null && break; sleep 0.2; done

echo
echo "== site"; pl site show demo
echo; echo "== what a site admin pastes on a new node (planetlite site token demo)"; pl site token demo --ttl 600
echo; echo "== pi"; pl whoami
echo; echo "== ssh keys"; pl key ls
echo; echo "== slice"; pl slice show demo_hello
echo; echo "== sliver"; pl sliver ls demo_hello
echo; echo "== ssh -p $PORT demo_hello@$NODE_ADDR 'cat /etc/slicename; id; uname -n'"
"${SSH[@]}" "demo_hello@$NODE_ADDR" 'cat /etc/slicename; id; uname -n'
# The same sliver through the node's ssh front door (port 22 of the node): no port to remember.
FRONT=(ssh -i "$KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR)
for _ in $(seq 1 50); do "${FRONT[@]}" "demo_hello@$NODE_ADDR" true 2>/dev/null && break; sleep 0.2; done
echo; echo "== ssh demo_hello@$NODE_ADDR 'cat /etc/slicename; id'   (the node's front door: no port)"
"${FRONT[@]}" "demo_hello@$NODE_ADDR" 'cat /etc/slicename; id'
echo
echo "Registry: $REGISTRY  (API docs: $REGISTRY/docs; CA $CA_PIN, in $CA)"
echo
echo "== the dashboard (with KEEP_RUNNING=1): $REGISTRY/"
echo "  Your browser asks you to accept the registry's own CA ($CA) or to go on past its warning."
echo "  Log in as the demo PI: $PI_EMAIL / $PI_PASSWORD. Then click:"
echo "  - Slices → demo_hello: its sliver is running; Copy puts 'ssh -p $PORT demo_hello@$NODE_ADDR' on the clipboard"
echo "    (add -i $KEY). Click the node's name for the sliver's actions, usage plots and events."
echo "  - Add slivers on the same page, SSH keys to add yours, My site for users, enrollment tokens and nodes."
if [ -n "${KEEP_RUNNING:-}" ]; then
  echo "Registry (pid $REGISTRY_PID), agent (pid $AGENT_PID) and the sliver keep running. Try:"
  echo "  ssh -i $KEY -p $PORT demo_hello@$NODE_ADDR"
  echo "  PLANETLITE_CONFIG=$PLANETLITE_CONFIG npx planetlite sliver ls demo_hello"
else
  echo "Sliver deleted, agent and registry stopped; data stays in $DATA. KEEP_RUNNING=1 keeps them up."
fi
