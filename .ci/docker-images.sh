#!/usr/bin/env bash
# Makes a Docker engine and the images the tests and `make up` use available:
#
#   - installs docker.io (and docker-compose, mmdebstrap) with apt-get when
#     no docker command or daemon is installed, and starts dockerd when no
#     engine answers;
#   - for each image: keeps it when it is present, pulls it when a registry
#     answers, and only otherwise builds a stand-in from Debian packages
#     (mmdebstrap, docker import, a small Dockerfile giving the official
#     image's layout), tagged with the official name, so testcontainers and
#     docker compose find it locally and never pull;
#   - prints `export VAR=value` lines for the builder and runtime images of
#     the service's Dockerfile when they had to be substituted (those are
#     passed as build arguments, see the Makefile's `up` target).
#
# Usage: eval "$(bash .ci/docker-images.sh)"   (progress goes to stderr)
set -euo pipefail
cd "$(dirname "$0")/.."

RABBITMQ_IMAGE=${STACK_RABBITMQ_IMAGE:-rabbitmq:3.13-management}
MOSQUITTO_IMAGE=${STACK_MOSQUITTO_IMAGE:-eclipse-mosquitto:2.0}
POSTGRES_IMAGE=${STACK_POSTGRES_IMAGE:-postgres:15-alpine}
GO_IMAGE=${STACK_GO_IMAGE:-golang:1.26}
RUNTIME_IMAGE=${STACK_RUNTIME_IMAGE:-gcr.io/distroless/static-debian12:nonroot}
# Stand-ins for the service's builder and runtime images.
LOCAL_GO_IMAGE=hexmill-local/golang:1.26
LOCAL_RUNTIME_IMAGE=hexmill-local/runtime:bookworm
SUITE=bookworm
SOURCES=/etc/apt/sources.list.d/debian.sources

log() { echo ".ci/docker-images.sh: $*" >&2; }

engine() {
  if ! command -v dockerd >/dev/null || ! command -v mmdebstrap >/dev/null ||
    ! { command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1; }; then
    log "installing docker.io, docker-compose, mmdebstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose mmdebstrap >&2
  fi
  if docker info >/dev/null 2>&1; then
    return
  fi
  log "starting dockerd (log: /var/log/hexmill-dockerd.log)"
  nohup dockerd >/var/log/hexmill-dockerd.log 2>&1 &
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && return
    sleep 0.5
  done
  log "dockerd does not answer; see /var/log/hexmill-dockerd.log"
  exit 1
}

# have IMAGE: the image is present, or could be pulled.
have() {
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  log "pulling $1"
  timeout 120 docker pull -q "$1" >/dev/null 2>&1
}

# rootfs TAG PACKAGES [mmdebstrap options...]: imports a Debian root
# filesystem holding PACKAGES as TAG.
rootfs() {
  local tag=$1 pkgs=$2
  shift 2
  local tmp
  tmp=$(mktemp -d)
  log "building $tag from Debian packages ($pkgs)"
  mmdebstrap --quiet --variant=apt --include="$pkgs" "$@" "$SUITE" "$tmp/rootfs.tar" - <"$SOURCES" >&2
  docker import "$tmp/rootfs.tar" "$tag" >/dev/null
  rm -rf "$tmp"
}

# build TAG: builds a Dockerfile read from stdin, with no context.
build() {
  docker build -q -t "$1" - >/dev/null
}

rabbitmq() {
  have "$RABBITMQ_IMAGE" && return
  rootfs hexmill-local/rabbitmq-rootfs rabbitmq-server,ca-certificates
  # What the official image gives: guest may log in from outside the
  # container, logs on stdout, management and AMQP 1.0 (any mounted
  # enabled_plugins file replaces the list), the broker in the foreground.
  build "$RABBITMQ_IMAGE" <<'EOF'
FROM hexmill-local/rabbitmq-rootfs
RUN mkdir -p /etc/rabbitmq/conf.d \
 && printf 'loopback_users.guest = false\nlisteners.tcp.default = 5672\nmanagement.tcp.port = 15672\n' >/etc/rabbitmq/conf.d/10-defaults.conf \
 && echo '[rabbitmq_management,rabbitmq_amqp1_0].' >/etc/rabbitmq/enabled_plugins \
 && : >/etc/rabbitmq/rabbitmq.conf \
 && chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq
ENV PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/var/lib/rabbitmq RABBITMQ_LOGS=- LANG=C.UTF-8
USER rabbitmq
WORKDIR /var/lib/rabbitmq
VOLUME /var/lib/rabbitmq
EXPOSE 4369 5671 5672 15671 15672 25672
CMD ["rabbitmq-server"]
EOF
  docker rmi hexmill-local/rabbitmq-rootfs >/dev/null
}

mosquitto() {
  have "$MOSQUITTO_IMAGE" && return
  rootfs hexmill-local/mosquitto-rootfs mosquitto,mosquitto-clients
  build "$MOSQUITTO_IMAGE" <<'EOF'
FROM hexmill-local/mosquitto-rootfs
RUN mkdir -p /mosquitto/config /mosquitto/data /mosquitto/log \
 && printf 'listener 1883\nallow_anonymous true\npersistence true\npersistence_location /mosquitto/data/\nlog_dest stdout\n' >/mosquitto/config/mosquitto.conf \
 && chown -R mosquitto:mosquitto /mosquitto
VOLUME ["/mosquitto/data", "/mosquitto/log"]
EXPOSE 1883
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
EOF
  docker rmi hexmill-local/mosquitto-rootfs >/dev/null
}

# PostgreSQL for `make up STATE=1` (and testcontainers' postgres module):
# Debian's postgresql-15 with an entrypoint doing what the official one
# does that they use. On the first start (no cluster in $PGDATA): a cluster
# whose superuser is POSTGRES_USER with POSTGRES_PASSWORD, password
# (scram-sha-256) or POSTGRES_HOST_AUTH_METHOD for TCP from anywhere, trust
# on the socket, database POSTGRES_DB created by a temporary server on a
# socket of its own (pg_isready, the healthcheck, answers only for the
# real one; "ready to accept connections" is logged twice, as
# testcontainers waits for). Then the server in the foreground as the
# postgres user on all addresses, logging to stderr; STOPSIGNAL SIGINT is
# the official image's fast shutdown (SIGTERM is a smart one, waiting for
# clients).
postgresql() {
  have "$POSTGRES_IMAGE" && return
  local entrypoint
  entrypoint=$(mktemp)
  cat >"$entrypoint" <<'EOF'
#!/bin/sh
set -eu
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}" "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    echo "docker-entrypoint.sh: POSTGRES_PASSWORD is empty (or set POSTGRES_HOST_AUTH_METHOD=trust)" >&2
    exit 1
  fi
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 \
    --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD"
  rm -f "$pwfile"
  echo "host all all all $POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    sock=$(mktemp -d)
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=$sock" -w start
    psql -v ON_ERROR_STOP=1 -h "$sock" -U "$POSTGRES_USER" -d postgres -v db="$POSTGRES_DB" <<'SQL'
CREATE DATABASE :"db";
SQL
    pg_ctl -D "$PGDATA" -m fast -w stop
    rmdir "$sock"
  fi
fi
exec "$@"
EOF
  # No cluster from the package's postinst: the entrypoint makes it.
  rootfs hexmill-local/postgres-rootfs postgresql-15 \
    --setup-hook='mkdir -p "$1/etc/postgresql-common/createcluster.d" && echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.d/hexmill.conf"' \
    --customize-hook="upload $entrypoint /usr/local/bin/docker-entrypoint.sh" \
    --customize-hook='chmod 755 "$1/usr/local/bin/docker-entrypoint.sh"'
  rm -f "$entrypoint"
  build "$POSTGRES_IMAGE" <<'EOF'
FROM hexmill-local/postgres-rootfs
RUN mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 700 /var/lib/postgresql/data && chmod 3777 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
USER postgres
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
EOF
  docker rmi hexmill-local/postgres-rootfs >/dev/null
}

# The service's builder: Debian with this machine's Go toolchain and this
# machine's CA certificates (go mod download reaches the module proxy the
# way this machine does).
builder() {
  if have "$GO_IMAGE"; then
    echo "export STACK_GO_IMAGE=$GO_IMAGE"
    return
  fi
  if ! docker image inspect "$LOCAL_GO_IMAGE" >/dev/null 2>&1; then
    local goroot
    goroot=$(go env GOROOT)
    rootfs hexmill-local/golang-rootfs ca-certificates \
      --customize-hook="mkdir -p \"\$1/usr/local/go\"" \
      --customize-hook="sync-in $goroot /usr/local/go" \
      --customize-hook="upload /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt"
    build "$LOCAL_GO_IMAGE" <<'EOF'
FROM hexmill-local/golang-rootfs
ENV PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
    docker rmi hexmill-local/golang-rootfs >/dev/null
  fi
  echo "export STACK_GO_IMAGE=$LOCAL_GO_IMAGE"
}

# The service's runtime: a static binary needs only CA certificates.
runtime() {
  if have "$RUNTIME_IMAGE"; then
    echo "export STACK_RUNTIME_IMAGE=$RUNTIME_IMAGE"
    return
  fi
  if ! docker image inspect "$LOCAL_RUNTIME_IMAGE" >/dev/null 2>&1; then
    rootfs "$LOCAL_RUNTIME_IMAGE" ca-certificates
  fi
  echo "export STACK_RUNTIME_IMAGE=$LOCAL_RUNTIME_IMAGE"
}

engine
rabbitmq
mosquitto
postgresql
builder
runtime
log "images ready"
