# Two-hop contestant (rendered by the harness, run as "bash start.sh" under
# taskset -c 1, so both egressd processes inherit the contestant's core).
# Central first (the agent would reset every flow without it), then the agent;
# SIGTERM/SIGINT stop both; if either exits, the other is stopped too, so the
# harness sees the contestant die.
set -u
egressd="${PEERS_EGRESSD}"
"$egressd" run --config "${CDIR}/central.yaml" --log-level warn &
central=$!
agent=""
stop() { kill -TERM $central $agent 2>/dev/null; }
trap stop TERM INT
for _ in $(seq 100); do
  curl -sf -o /dev/null --max-time 1 http://127.0.0.1:22904/readyz && break
  kill -0 $central 2>/dev/null || exit 1
  sleep 0.1
done
"$egressd" run --config "${CDIR}/agent.yaml" --log-level warn &
agent=$!
wait -n
rc=$?
stop
wait
exit $rc
