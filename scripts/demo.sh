#!/usr/bin/env bash
# The demo (`make demo`): the local stack, `citywatch run`, a compressed city day of simulated devices
# with faults at 1000x, the live alert board while it runs, and the scorecard. About three minutes.
# Options are passed on: scripts/demo.sh --speed 2000
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/stack.sh up
# shellcheck disable=SC1091
source .stack/env
exec .venv/bin/python -m citywatch.demo "$@"
