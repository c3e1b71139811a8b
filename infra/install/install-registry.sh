#!/usr/bin/env bash
# Installs a PlanetLite registry on a Debian 12 machine, as root, from an unpacked release
# bundle: Debian's PostgreSQL and Redis as system services (a role and database of its own, a
# random password), the bundled Node 24 and registry under /opt/planetlite, a system user
# `planetlite` owning /var/lib/planetlite-registry, /etc/planetlite/registry.env read by the unit,
# and the first admin. Run again, it upgrades in place and keeps the database and the env file.
#
#   ./install-registry.sh --public-url URL --admin-email EMAIL [--admin-password-file FILE]
#                         [--listen 0.0.0.0:8080] [--database-url URL --redis-url URL]
#                         [--no-start] [--prefix /opt/planetlite] [--root DIR]
#
# PUBLIC_URL is how nodes and users reach it (e.g. https://registry.example.org:8080). Without
# --admin-password-file a password is generated and printed once. With --database-url and
# --redis-url (managed services, replicas) no local PostgreSQL or Redis is installed; --root needs
# them. --root DIR: see install-lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/install-lib.sh"

PUBLIC_URL="" ADMIN_EMAIL="" ADMIN_PASSWORD_FILE="" LISTEN=0.0.0.0:8080 DATABASE_URL_ARG="" REDIS_URL_ARG="" START=1
while [ $# -gt 0 ]; do
  case "$1" in
    --public-url) PUBLIC_URL="$2"; shift 2 ;;
    --admin-email) ADMIN_EMAIL="$2"; shift 2 ;;
    --admin-password-file) ADMIN_PASSWORD_FILE="$2"; shift 2 ;;
    --listen) LISTEN="$2"; shift 2 ;;
    --database-url) DATABASE_URL_ARG="$2"; shift 2 ;;
    --redis-url) REDIS_URL_ARG="$2"; shift 2 ;;
    --no-start) START=0; shift ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --root) TARGET_ROOT="$(realpath -m "$2")"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
need_root
ENV_FILE="$(R /etc/planetlite/registry.env)"
DATA_DIR="$(R /var/lib/planetlite-registry)"
UPGRADE=0
[ -f "$ENV_FILE" ] && UPGRADE=1
if [ "$UPGRADE" = 0 ]; then
  [ -n "$PUBLIC_URL" ] && [ -n "$ADMIN_EMAIL" ] || die "a new registry needs --public-url URL --admin-email EMAIL"
  on_host || { [ -n "$DATABASE_URL_ARG" ] && [ -n "$REDIS_URL_ARG" ]; } || die "--root installs no PostgreSQL or Redis: give --database-url and --redis-url"
fi
random() { head -c 24 /dev/urandom | base64 | tr -d '/+=' ; }

# 1. Debian's PostgreSQL and Redis, as services, unless the admin brought their own.
if on_host && [ -z "$DATABASE_URL_ARG$REDIS_URL_ARG" ] && [ "$UPGRADE" = 0 ]; then
  apt_add postgresql redis-server ca-certificates openssl
  [ -n "$APT_ADDED" ] && manifest_set registry PACKAGES "$APT_ADDED"
  # What this install starts, uninstall stops again.
  pg_up() { runuser -u postgres -- psql -tAc 'SELECT 1' >/dev/null 2>&1; }
  redis_up() { [ "$(redis-cli -h 127.0.0.1 ping 2>/dev/null)" = PONG ]; }
  pg_up || manifest_set registry STARTED_postgresql 1
  redis_up || manifest_set registry STARTED_redis-server 1
  if have_systemd; then
    systemctl enable --now postgresql redis-server >/dev/null 2>&1
  else
    service postgresql start >/dev/null; service redis-server start >/dev/null
  fi
fi
# A cluster set to start by hand (start.conf: manual) is not started by the service.
if on_host && [ -z "$DATABASE_URL_ARG" ] && [ "$UPGRADE" = 0 ] && ! runuser -u postgres -- psql -tAc 'SELECT 1' >/dev/null 2>&1; then
  read -r pg_version pg_cluster _ < <(pg_lsclusters --no-header)
  pg_ctlcluster "$pg_version" "$pg_cluster" start || die "PostgreSQL $pg_version/$pg_cluster does not start (pg_lsclusters)"
fi

# 2. The system user and its data dir (images, the registry's CA and certificates).
if on_host && ! id planetlite >/dev/null 2>&1; then
  useradd --system --user-group --home-dir /var/lib/planetlite-registry --no-create-home --shell /usr/sbin/nologin planetlite
  manifest_set registry USER_CREATED 1
fi
mkdir -p "$DATA_DIR"
chmod 750 "$DATA_DIR"
on_host && chown planetlite:planetlite "$DATA_DIR"

# 3. Programs and unit.
install_prefix
manifest_set registry PREFIX "$PREFIX"
install_unit planetlite-registry.service

# 4. Database, Redis and the first admin, once: an upgrade keeps the env file as it is.
if [ "$UPGRADE" = 1 ]; then
  log "upgrade: keeping $ENV_FILE and the database"
else
  DATABASE_URL="$DATABASE_URL_ARG" REDIS_URL="$REDIS_URL_ARG"
  if [ -z "$DATABASE_URL" ]; then
    pw="$(random)"
    # Over the local socket as postgres; the role logs in with a password over 127.0.0.1.
    if runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_roles WHERE rolname='planetlite'" | grep -q 1; then
      runuser -u postgres -- psql -qc "ALTER ROLE planetlite WITH LOGIN PASSWORD '$pw'"
    else
      runuser -u postgres -- psql -qc "CREATE ROLE planetlite WITH LOGIN PASSWORD '$pw'"
      manifest_set registry DB_CREATED 1
    fi
    runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_database WHERE datname='planetlite'" | grep -q 1 ||
      runuser -u postgres -- createdb -O planetlite planetlite
    DATABASE_URL="postgres://planetlite:$pw@127.0.0.1:5432/planetlite"
  fi
  [ -n "$REDIS_URL" ] || REDIS_URL="redis://127.0.0.1:6379"
  if [ -n "$ADMIN_PASSWORD_FILE" ]; then
    ADMIN_PASSWORD="$(head -1 "$ADMIN_PASSWORD_FILE")"
  else
    ADMIN_PASSWORD="$(random)"
    log "the first admin is $ADMIN_EMAIL with password $ADMIN_PASSWORD (shown once; change it after the first login)"
  fi
  [ "${#ADMIN_PASSWORD}" -ge 8 ] || die "the admin password must have at least 8 characters"
  mkdir -p "$(dirname "$ENV_FILE")"
  umask 027
  cat >"$ENV_FILE" <<ENV
# Read by planetlite-registry.service (README: Running a registry lists every setting).
PLANETLITE_LISTEN=$LISTEN
PLANETLITE_PUBLIC_URL=$PUBLIC_URL
DATABASE_URL=$DATABASE_URL
REDIS_URL=$REDIS_URL
# Used on the first start against an empty database only; delete them once you have logged in.
PLANETLITE_ADMIN_EMAIL=$ADMIN_EMAIL
PLANETLITE_ADMIN_PASSWORD=$ADMIN_PASSWORD
ENV
  umask 022
  chmod 640 "$ENV_FILE"
  on_host && chown root:planetlite "$ENV_FILE"
fi

# 5. Start (or restart after an upgrade).
REGISTRY="$(R "$PREFIX")/current/bin/planetlite-registry"
if have_systemd; then
  systemctl daemon-reload
  systemctl enable planetlite-registry.service >/dev/null 2>&1
  if [ "$START" = 1 ]; then
    systemctl restart planetlite-registry.service
    log "planetlite-registry is running: systemctl status planetlite-registry; journalctl -u planetlite-registry"
  fi
else
  log "no systemd here: start the registry with  set -a; . $ENV_FILE; set +a; $REGISTRY serve --data-dir $DATA_DIR"
fi
# The registry makes its own CA on its first start (DATA_DIR/tls); nodes and users pin it.
CA_FILE="$DATA_DIR/tls/ca.pem"
if have_systemd && [ "$START" = 1 ]; then
  for _ in $(seq 1 150); do [ -f "$CA_FILE" ] && break; sleep 0.2; done
fi
PIN_ARG=""
if [ -f "$CA_FILE" ]; then
  PIN="sha256:$(openssl x509 -in "$CA_FILE" -pubkey -noout | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1)"
  log "its CA pin is $PIN: users pass it to planetlite login, nodes get it with their enrollment token"
  PIN_ARG=" --ca-pin $PIN"
else
  log "its CA pin is logged at its first start (ca_pin), and printed by planetlite site token"
fi
log "registry installed; next: planetlite --registry ${PUBLIC_URL:-URL} login --email ${ADMIN_EMAIL:-ADMIN}$PIN_ARG; remove it with: $(R "$PREFIX")/current/uninstall.sh --registry$( [ "$TARGET_ROOT" = / ] || printf ' --root %s' "$TARGET_ROOT") [--keep-data]"
