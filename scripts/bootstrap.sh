#!/usr/bin/env bash
# Install what citywatch needs on a fresh Debian machine: the servers (Debian packages), a virtual
# environment in .venv and the Python packages. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(mosquitto mosquitto-clients influxdb victoria-metrics)

missing=()
for bin in /usr/sbin/mosquitto /usr/bin/mosquitto_pub /usr/bin/influxd /usr/bin/victoria-metrics; do
  [[ -x "$bin" ]] || missing+=("$bin")
done
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
  if ! .venv/bin/python -m pip install -q -e '.[test]' > .venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log >&2
    echo "bootstrap: pip install failed (log above)" >&2
    exit 1
  fi
  .venv/bin/python -c "import citywatch, paho.mqtt, influxdb_client, numpy, scipy, apscheduler, yaml, pydantic, rich"
  echo "$want" > "$stamp"
fi
