#!/usr/bin/env bash
# The main job: set everything up, start a registry on its embedded database, and walk the
# path a testbed's people take: an admin creates a site and its PI, the PI logs in, adds an
# ssh key and creates a slice. Prints what was created. Idempotent: run it as often as you like.
#
#   bash scripts/demo.sh            # data under .data/demo, registry on 127.0.0.1:8080 (or PLANETLITE_LISTEN)
#   KEEP_RUNNING=1 bash scripts/demo.sh   # leave the registry running afterwards
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(repo_root)"
cd "$ROOT"

bash scripts/setup.sh

DATA="$ROOT/.data/demo"
LISTEN="${PLANETLITE_LISTEN:-127.0.0.1:8080}"
REGISTRY="http://$LISTEN"
mkdir -p "$DATA"
export PLANETLITE_CONFIG="$DATA/cli-config.json"   # the demo's CLI login, kept apart from yours
export PLANETLITE_REGISTRY="$REGISTRY"
export PLANETLITE_ADMIN_EMAIL="${PLANETLITE_ADMIN_EMAIL:-admin@demo.planetlite.test}"
export PLANETLITE_ADMIN_PASSWORD="${PLANETLITE_ADMIN_PASSWORD:-demo-admin-password}"
PI_EMAIL="pi@demo.planetlite.test"
PI_PASSWORD="demo-pi-password"
pl() { "$ROOT/node_modules/.bin/planetlite" "$@"; }

if curl -fsS "$REGISTRY/healthz" >/dev/null 2>&1; then
  die "something already answers on $LISTEN; stop it or set PLANETLITE_LISTEN=127.0.0.1:PORT"
fi

log "registry: starting on $LISTEN with its embedded database in $DATA/registry"
"$ROOT/node_modules/.bin/planetlite-registry" serve --listen "$LISTEN" --data-dir "$DATA/registry" >"$DATA/registry.log" 2>&1 &
REGISTRY_PID=$!
stop_registry() {
  if [ -z "${KEEP_RUNNING:-}" ] && kill -0 "$REGISTRY_PID" 2>/dev/null; then
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
  fi
}
trap stop_registry EXIT
for _ in $(seq 1 100); do
  curl -fsS "$REGISTRY/healthz" >/dev/null 2>&1 && break
  kill -0 "$REGISTRY_PID" 2>/dev/null || { cat "$DATA/registry.log" >&2; die "the registry exited; its log is above"; }
  sleep 0.2
done
curl -fsS "$REGISTRY/healthz" >/dev/null || die "the registry did not come up; see $DATA/registry.log"

log "admin: log in and create the site 'demo' and its PI"
PLANETLITE_PASSWORD="$PLANETLITE_ADMIN_PASSWORD" pl login --email "$PLANETLITE_ADMIN_EMAIL" >/dev/null
pl site show demo >/dev/null 2>&1 || pl site create demo --name "Demo University" --max-slices 10 --max-slivers 100 >/dev/null
pl user ls --site demo --json | grep -q "\"$PI_EMAIL\"" ||
  PLANETLITE_NEW_PASSWORD="$PI_PASSWORD" pl user create --email "$PI_EMAIL" --name "Demo PI" --site demo --role pi --role user >/dev/null

log "pi: log in, add an ssh key, create the slice demo_hello"
PLANETLITE_PASSWORD="$PI_PASSWORD" pl login --email "$PI_EMAIL" >/dev/null
KEY="$DATA/id_ed25519"
[ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C "$PI_EMAIL" -f "$KEY"
pl key ls --json | grep -q "$(cut -d' ' -f2 "$KEY.pub")" || pl key add "$KEY.pub" >/dev/null
pl slice show demo_hello >/dev/null 2>&1 ||
  pl slice create demo_hello --description "Hello, PlanetLite" --url "https://example.org/hello" >/dev/null

echo
echo "== site"; pl site show demo
echo; echo "== pi"; pl whoami
echo; echo "== ssh keys"; pl key ls
echo; echo "== slice"; pl slice show demo_hello
echo
echo "Registry: $REGISTRY  (API docs: $REGISTRY/docs)"
if [ -n "${KEEP_RUNNING:-}" ]; then
  echo "The registry keeps running (pid $REGISTRY_PID). Try: PLANETLITE_CONFIG=$PLANETLITE_CONFIG npx planetlite slice ls"
else
  echo "Registry stopped; its data stays in $DATA. Run again with KEEP_RUNNING=1 to keep it up."
fi
