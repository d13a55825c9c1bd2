# Sourced by .ci/run: make a MySQL-compatible server answer on 127.0.0.1:3306, create the test
# database, apply the MySQL backend's schema with the stock client (the same files
# `stovepipe migrate` runs), and export STOVEPIPE_TEST_MYSQL_URL. Fails loudly otherwise.
# A server this script starts is stopped at exit; one that was already running is left alone.

mysql_service_client=$(command -v mariadb || command -v mysql || true)
mysql_service_admin=$(command -v mariadb-admin || command -v mysqladmin || true)
if [ -z "$mysql_service_client" ] || [ -z "$mysql_service_admin" ]; then
  echo "mysql service: no mariadb/mysql client on PATH (Debian: apt-get install -y mariadb-client)" >&2
  exit 1
fi

mysql_service_answers() {
  "$mysql_service_admin" --protocol=tcp -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 ping >/dev/null 2>&1
}

if ! mysql_service_answers; then
  if [ ! -x /usr/sbin/mariadbd ]; then
    echo "mysql service: nothing answers on 127.0.0.1:3306 and /usr/sbin/mariadbd is not installed" >&2
    exit 1
  fi
  if start-stop-daemon --status --exec /usr/sbin/mariadbd; then
    echo "mysql service: mariadbd is running but not answering yet; waiting"
  else
    echo "mysql service: starting /usr/sbin/mariadbd"
    install -d -o mysql -g mysql /run/mysqld
    mysql_service_pidfile=$(mktemp)
    start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$mysql_service_pidfile" \
      --exec /usr/sbin/mariadbd
    ci_at_exit "start-stop-daemon --stop --oknodo --retry 30 --pidfile '$mysql_service_pidfile' --exec /usr/sbin/mariadbd; rm -f '$mysql_service_pidfile'"
  fi
  for _ in $(seq 60); do
    mysql_service_answers && break
    sleep 1
  done
  if ! mysql_service_answers; then
    echo "mysql service: mariadbd started but 127.0.0.1:3306 did not answer within 60s" >&2
    exit 1
  fi
fi

"$mysql_service_client" --protocol=tcp -h 127.0.0.1 -P 3306 -u root \
  -e 'CREATE DATABASE IF NOT EXISTS stovepipe_test'
for mysql_service_schema in backends/mysql/schema/*.sql; do
  "$mysql_service_client" --protocol=tcp -h 127.0.0.1 -P 3306 -u root stovepipe_test <"$mysql_service_schema"
done
export STOVEPIPE_TEST_MYSQL_URL="mysql://root@127.0.0.1:3306/stovepipe_test"
echo "mysql service: $STOVEPIPE_TEST_MYSQL_URL"
