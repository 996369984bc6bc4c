# Shared by the benchmark scripts (sourced): installing wrk, starting and stopping a
# run's ingest pipeline, and reading CPU seconds and peak RSS of its processes and of the
# shared services.
pids=()
stop_pipeline() {
  [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null || true
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  pids=()
}
cpu_of() { awk '{print ($14+$15)/100}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_of() { awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }
named_pids() { # the pipeline's processes plus the shared services'
  cat "$RUN/pids"
  echo "broker $(pgrep -f 'nisshi broker.*127.0.0.1:9092' | head -1)"
  echo "clickhouse $(pgrep -f clickhouse-server | head -1)"
}
pg_cpu() { # all PostgreSQL backends together
  local t=0
  for p in $(pgrep -u postgres); do t=$(awk -v t="$t" -v c="$(cpu_of "$p")" 'BEGIN {print t + c}'); done
  echo "$t"
}

need_wrk() { # Debian's wrk, installed if missing
  command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } ||
    { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
}

# The ingest pipeline of one run (gateway on 127.0.0.1:$GW_PORT, normalizer, both sinks;
# ops ports 19100-19103), with its own topics, PostgreSQL and ClickHouse databases.
# Needs BIN and RUN; CH_SINK_ENV="K=V ..." goes to the ch-sink only.
start_pipeline() { # id
  local id=$1
  export SWITCHBOARD_TOPIC_PREFIX=$id. SWITCHBOARD_CLICKHOUSE_DATABASE=$id
  su postgres -c "psql -qc 'CREATE DATABASE $id OWNER switchboard'" >/dev/null
  export SWITCHBOARD_DATABASE_URL=postgres://switchboard:switchboard@127.0.0.1:5432/$id
  "$BIN/switchboard" create-topics --partitions 6 >/dev/null 2>&1
  : >"$RUN/pids"
  start() { local name=$1; shift; env "$@" "$BIN/$name" >"$RUN/$name.log" 2>&1 & pids+=($!); echo "$name $!" >>"$RUN/pids"; }
  start gateway SWITCHBOARD_HTTP_ADDR=127.0.0.1:$GW_PORT SWITCHBOARD_OPS_ADDR=127.0.0.1:19100
  start normalizer SWITCHBOARD_OPS_ADDR=127.0.0.1:19101 SWITCHBOARD_GROUP_ID=$id-n
  start pg-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:19102 SWITCHBOARD_GROUP_ID=$id-p
  # shellcheck disable=SC2086 # CH_SINK_ENV is a list of K=V words
  start ch-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:19103 SWITCHBOARD_GROUP_ID=$id-c ${CH_SINK_ENV:-}
  for port in 19100 19101 19102 19103; do
    for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  done
}
