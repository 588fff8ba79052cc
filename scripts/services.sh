#!/usr/bin/env bash
# Start the local services the tests use (PostgreSQL, Redis, RabbitMQ) if they are down, and
# wait until they accept connections. Used by .ci/run and `make test`; safe to run repeatedly.
# On a machine without these servers installed it says so and returns 0: the tests that need
# them are then skipped with a reason (but fail under CI=true).
set -u

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # name port seconds
  for _ in $(seq 1 "$3"); do up "$2" && return 0; sleep 1; done
  echo "services: $1 did not come up on port $2" >&2; return 1
}

status=0
if ! up 5432; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    wait_for PostgreSQL 5432 30 || status=1
  else
    echo "services: PostgreSQL is not installed here"
  fi
fi
if ! up 6379; then
  if command -v redis-server >/dev/null; then
    echo "services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    wait_for Redis 6379 15 || status=1
  else
    echo "services: Redis is not installed here"
  fi
fi
if ! up 5672; then
  if command -v rabbitmq-server >/dev/null; then
    echo "services: starting RabbitMQ"
    rabbitmq-server -detached || true
    wait_for RabbitMQ 5672 90 || status=1
  else
    echo "services: RabbitMQ is not installed here"
  fi
fi
exit $status
