# Sourced by .ci/run: make sure redis-server is installed; the tests start their own Redis.
if ! command -v redis-server >/dev/null; then
  echo "redis: installing Debian's redis-server"
  ci_apt_install redis-server
fi
echo "redis: $(command -v redis-server)"
