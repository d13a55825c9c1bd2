# etcd for the etcd backend's tests. Sourced by .ci/run (bash, set -euo pipefail).
#
# Uses STOVEPIPE_TEST_ETCD_URL as given if it is set. Otherwise: installs Debian's etcd-server
# when `etcd` is missing (without letting the package start a system service), reuses a
# healthy etcd on 127.0.0.1:2379 if one answers, else starts one on loopback with a temporary
# data directory, waits until it reports healthy, and registers its shutdown. It only ever
# stops the etcd it started. Any failure ends the run: CI never skips etcd.

etcd_service_health() {
  # Exit 0 if the etcd at 127.0.0.1:2379 answers /health with healthy.
  python3 - <<'PY'
import json, sys, urllib.request
try:
    with urllib.request.urlopen("http://127.0.0.1:2379/health", timeout=2) as response:
        sys.exit(0 if json.load(response).get("health") == "true" else 1)
except Exception:
    sys.exit(1)
PY
}

etcd_service_port_open() {
  (exec 3<>/dev/tcp/127.0.0.1/2379) 2>/dev/null
}

etcd_service_install() {
  echo "etcd: installing Debian's etcd-server"
  # The package ships an init script; a policy-rc.d that denies every start keeps it from
  # starting a system etcd on port 2379 during the install.
  local policy=/usr/sbin/policy-rc.d added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=1
  fi
  local status=0
  {
    apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server
  } || status=$?
  if [ -n "$added_policy" ]; then rm -f "$policy"; fi
  if [ "$status" -ne 0 ] || ! command -v etcd >/dev/null; then
    echo "etcd: installing etcd-server failed (status $status)" >&2
    exit 1
  fi
}

etcd_service_start() {
  local dir pid started=$SECONDS
  dir="$(mktemp -d)"
  etcd --name stovepipe-ci --data-dir "$dir/data" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster stovepipe-ci=http://127.0.0.1:2380 >"$dir/etcd.log" 2>&1 &
  pid=$!
  ci_at_exit "kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf '$dir'"
  echo "etcd: started pid $pid, data in $dir/data"
  until etcd_service_health; do
    if ! kill -0 "$pid" 2>/dev/null || [ $((SECONDS - started)) -ge 60 ]; then
      echo "etcd: not healthy after $((SECONDS - started))s; its log:" >&2
      tail -n 30 "$dir/etcd.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

if [ -z "${STOVEPIPE_TEST_ETCD_URL:-}" ]; then
  if etcd_service_health; then
    echo "etcd: using the healthy etcd already on 127.0.0.1:2379"
  elif etcd_service_port_open; then
    echo "etcd: something on 127.0.0.1:2379 is not a healthy etcd" >&2
    exit 1
  else
    command -v etcd >/dev/null || etcd_service_install
    etcd_service_start
  fi
  export STOVEPIPE_TEST_ETCD_URL=etcd://127.0.0.1:2379
fi
echo "etcd: STOVEPIPE_TEST_ETCD_URL=$STOVEPIPE_TEST_ETCD_URL"
