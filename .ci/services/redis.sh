# Sourced by .ci/run: make a Redis answer on 127.0.0.1:6379 and point the tests at a database
# of their own on it. A server already running is used as it is and left running; one started
# here is shut down when the run ends.
redis_ci_db=15

redis_ci_ping() {
  python3 - <<'PY'
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", 6379), timeout=2) as connection:
        connection.sendall(b"PING\r\n")
        sys.exit(0 if connection.recv(64).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

if ! redis_ci_ping; then
  if ! command -v redis-server >/dev/null; then
    echo "redis: nothing answers on 127.0.0.1:6379 and redis-server is not installed" >&2
    exit 1
  fi
  echo "redis: starting redis-server on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  ci_at_exit "redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null"
  for _ in $(seq 50); do
    redis_ci_ping && break
    sleep 0.2
  done
  if ! redis_ci_ping; then
    echo "redis: redis-server did not answer PING within 10 s; its log:" >&2
    tail -n 20 /var/log/redis/ci.log >&2 || true
    exit 1
  fi
fi

export STOVEPIPE_TEST_REDIS_URL="redis://127.0.0.1:6379/${redis_ci_db}"
echo "redis: STOVEPIPE_TEST_REDIS_URL=${STOVEPIPE_TEST_REDIS_URL}"
