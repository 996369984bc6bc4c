# Shared by bench.sh and send-bench.sh (sourced): stopping a run's pipeline and reading
# CPU seconds and peak RSS of its processes and of the shared services.
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
