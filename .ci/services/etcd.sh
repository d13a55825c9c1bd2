# Sourced by .ci/run: make sure the etcd binary is installed; the tests start their own etcd.
if ! command -v etcd >/dev/null; then
  echo "etcd: installing Debian's etcd-server"
  ci_apt_install etcd-server
fi
echo "etcd: $(command -v etcd)"
