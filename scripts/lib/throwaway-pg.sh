# A throwaway PostgreSQL cluster for scripts/bench and scripts/ab (sourced, not
# run). The server's durability defaults (fsync on: `sync` pays the disk's fsync),
# a free loopback port, its processes pinned to one CPU; databases owned by
# ordinary roles, as a replica's would be.
#
#   pg_available          true if `pg_config --bindir` names initdb and pg_ctl
#   pg_start CPU DIR      a new cluster in DIR/pg; returns non-zero (after printing
#                         initdb's or the server's log) if it did not start
#   pg_stop               stops it (nothing if none runs)
#   pg_db NAME            a fresh database NAME owned by a role NAME; prints its URL
#                         (callers number the names: a command substitution's
#                         subshell cannot count for them)
#   pg_drop NAME          drops database NAME and its role
#   pg_cpu_ns             CPU time (ns) the postmaster and every process under it
#                         have run so far (/proc/PID/schedstat)
#   free_port             a free loopback TCP port

PG_BINDIR="$(pg_config --bindir 2>/dev/null || true)"
PG_ROOT="" PG_PORT="" PG_AS=()

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pg_available() { [[ -x $PG_BINDIR/initdb && -x $PG_BINDIR/pg_ctl ]]; }

pg_start() {
    local cpu="$1" dir="$2"
    PG_ROOT="$dir/pg"
    mkdir -p "$PG_ROOT"
    # PostgreSQL refuses to run as root.
    # (mktemp's directory is private to root: the postgres user must pass through it.)
    if [[ $(id -u) == 0 ]]; then chmod 755 "$dir"; chown postgres "$PG_ROOT"; PG_AS=(runuser -u postgres --); fi
    "${PG_AS[@]}" "$PG_BINDIR/initdb" -D "$PG_ROOT/data" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 >"$PG_ROOT/initdb.log" 2>&1 \
        || { cat "$PG_ROOT/initdb.log" >&2; return 1; }
    PG_PORT="$(free_port)"
    taskset -c "$cpu" "${PG_AS[@]}" "$PG_BINDIR/pg_ctl" start -w -s -D "$PG_ROOT/data" -l "$PG_ROOT/server.log" \
        -o "-p $PG_PORT -k $PG_ROOT -c listen_addresses=127.0.0.1 -c max_connections=200" \
        || { cat "$PG_ROOT/server.log" >&2; return 1; }
}

pg_stop() {
    [[ -n $PG_ROOT && -f $PG_ROOT/data/postmaster.pid ]] || return 0
    "${PG_AS[@]}" "$PG_BINDIR/pg_ctl" stop -m fast -w -s -D "$PG_ROOT/data" || true
}

pg_psql() {
    "${PG_AS[@]}" "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -U postgres -h "$PG_ROOT" -p "$PG_PORT" -d postgres "$@" >&2
}

pg_db() {
    local name="$1" pw
    pw="$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
    pg_psql -c "CREATE ROLE $name LOGIN PASSWORD '$pw' NOSUPERUSER NOCREATEDB NOCREATEROLE" \
        -c "CREATE DATABASE $name OWNER $name"
    echo "postgres://$name:$pw@127.0.0.1:$PG_PORT/$name"
}

pg_drop() { pg_psql -c "DROP DATABASE $1" -c "DROP ROLE $1"; }

pg_cpu_ns() {
    [[ -n $PG_ROOT ]] || { echo 0; return; }
    local main ns=0 p
    main="$(head -1 "$PG_ROOT/data/postmaster.pid")"
    for p in "$main" $(pgrep -P "$main"); do
        [[ -r /proc/$p/schedstat ]] && ns=$((ns + $(cut -d' ' -f1 "/proc/$p/schedstat" 2>/dev/null || echo 0)))
    done
    echo "$ns"
}
