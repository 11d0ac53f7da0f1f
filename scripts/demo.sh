#!/usr/bin/env bash
# The demo: the local stack, then the service in the foreground (later: simulators, alerts, scorecard).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/stack.sh up
source .stack/env
exec .venv/bin/citywatch run
