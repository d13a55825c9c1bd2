# Sourced by .ci/run: make sure a MariaDB server and mariadb-install-db are installed; the
# tests initialise a data directory of their own and start their own server.
mysql_service_path="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
if ! PATH="$mysql_service_path" command -v mariadbd >/dev/null ||
  ! PATH="$mysql_service_path" command -v mariadb-install-db >/dev/null; then
  echo "mysql: installing Debian's mariadb-server"
  ci_apt_install mariadb-server
fi
echo "mysql: $(PATH="$mysql_service_path" command -v mariadbd)"
