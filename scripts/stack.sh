#!/usr/bin/env bash
# The local stack: Mosquitto and InfluxDB as plain background processes bound to 127.0.0.1, with
# data, logs, pid files and generated credentials under .stack/ (never committed).
#   scripts/stack.sh up       install what is missing, start both, wait until they answer, create the database
#   scripts/stack.sh down     stop both by pid
#   scripts/stack.sh status   show what runs (exit 1 if something is down)
#   ... up|down|status --cluster   the same, plus a 3-node NATS cluster with MQTT listeners under .stack/cluster
#                             (partitioned mode, README "Cluster mode"); its variables go to .stack/cluster.env
# Ports: CITYWATCH_MQTT_PORT (default 1883), CITYWATCH_INFLUX_PORT (default 8086).
# Broker accounts (.stack/credentials.json, 0600): the service `citywatch`, one per alerting.operators entry,
# `tester`, one per device; the ACL is generated from them and the inventory (no pattern lines). Started as
# root, Mosquitto runs as Debian's `mosquitto` user.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-status}
case "$action" in
  up) bash scripts/bootstrap.sh ;;
  down|status) ;;
  *) echo "usage: scripts/stack.sh up|down|status [--cluster]" >&2; exit 2 ;;
esac
args=() cluster=0
for arg in "${@:2}"; do
  if [[ $arg == --cluster ]]; then cluster=1; else args+=("$arg"); fi
done
if [[ ! -x .venv/bin/python ]]; then
  echo "stack: no .venv yet; run scripts/stack.sh up (or make test) first" >&2
  exit 1
fi
if ((cluster)); then
  rc=0
  .venv/bin/python -m citywatch.localstack "$action" --dir .stack "${args[@]}" || rc=$?
  .venv/bin/python -m citywatch.cluster "$action" --dir .stack || rc=$?
  exit $rc
fi
exec .venv/bin/python -m citywatch.localstack "$action" --dir .stack "${args[@]}"
