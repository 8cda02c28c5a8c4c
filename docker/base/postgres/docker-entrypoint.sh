#!/usr/bin/env bash
# Entrypoint of mysaaschat/postgres. It follows the contract of the official
# postgres:15 image so that one compose file runs on either:
#   - POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust),
#     POSTGRES_USER (default postgres), POSTGRES_DB (default: the user),
#     POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD
#     (default: password_encryption, i.e. scram-sha-256), and *_FILE variants;
#   - on an empty PGDATA: initdb, a socket-only temporary server, CREATE
#     DATABASE, /docker-entrypoint-initdb.d/* (*.sh, *.sql, *.sql.gz,
#     *.sql.xz, *.sql.zst) in name order, then stop;
#   - finally `exec "$@"` as the postgres user, so the server is PID 1.
# The script can be sourced to reuse its functions (as init scripts do).
set -Eeo pipefail

# pg_env_from_file VAR [DEFAULT]: VAR, or the content of the file named by
# VAR_FILE, or DEFAULT. Setting both VAR and VAR_FILE is an error.
pg_env_from_file() {
	local var="$1" def="${2:-}"
	local file_var="${var}_FILE"
	local value="${!var:-}" file="${!file_var:-}"
	if [ -n "$value" ] && [ -n "$file" ]; then
		printf >&2 'error: both %s and %s are set, but they are exclusive\n' "$var" "$file_var"
		exit 1
	fi
	if [ -n "$file" ]; then
		value="$(< "$file")"
	elif [ -z "$value" ]; then
		value="$def"
	fi
	export "$var=$value"
	unset "$file_var"
}

_is_sourced() {
	[ "${#FUNCNAME[@]}" -ge 2 ] &&
		[ "${FUNCNAME[0]}" = '_is_sourced' ] &&
		[ "${FUNCNAME[1]}" = 'source' ]
}

docker_setup_env() {
	pg_env_from_file POSTGRES_PASSWORD
	pg_env_from_file POSTGRES_USER postgres
	pg_env_from_file POSTGRES_DB "$POSTGRES_USER"
	pg_env_from_file POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=}"
	: "${PGDATA:=/var/lib/postgresql/data}"
	export PGDATA

	declare -g DATABASE_ALREADY_EXISTS
	: "${DATABASE_ALREADY_EXISTS:=}"
	if [ -s "$PGDATA/PG_VERSION" ]; then
		DATABASE_ALREADY_EXISTS=true
	fi
}

# Create PGDATA (and the WAL directory), and hand them to postgres when
# running as root.
docker_create_db_directories() {
	local uid
	uid="$(id -u)"
	mkdir -p "$PGDATA"
	chmod 0700 "$PGDATA" || :
	mkdir -p /var/run/postgresql || :
	chmod 3775 /var/run/postgresql || :
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		mkdir -p "$POSTGRES_INITDB_WALDIR"
		if [ "$uid" = 0 ]; then
			find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres '{}' +
		fi
		chmod 0700 "$POSTGRES_INITDB_WALDIR"
	fi
	if [ "$uid" = 0 ]; then
		find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
		find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
	fi
}

docker_verify_minimum_env() {
	if [ "${#POSTGRES_PASSWORD}" -ge 100 ]; then
		printf >&2 '%s\n' \
			'WARNING: POSTGRES_PASSWORD is 100 characters or longer;' \
			'         psql cannot use such a password through PGPASSWORD.'
	fi
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		printf >&2 '%s\n' \
			'Error: Database is uninitialized and superuser password is not specified.' \
			'       You must specify POSTGRES_PASSWORD to a non-empty value for the' \
			'       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".' \
			'' \
			'       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all' \
			'       connections without a password. This is *not* recommended.'
		exit 1
	fi
	if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
		printf >&2 '%s\n' \
			'WARNING: POSTGRES_HOST_AUTH_METHOD is "trust": every host that can reach' \
			'         port 5432 gets in without a password, even if POSTGRES_PASSWORD is set.'
	fi
}

# initdb with the superuser and password from the environment; extra
# arguments come from POSTGRES_INITDB_ARGS (word-split like the official
# image does) and from this function's arguments.
docker_init_database_dir() {
	# initdb needs the current uid in the passwd database; with an arbitrary
	# --user, nss_wrapper provides a temporary entry.
	local uid wrapper
	uid="$(id -u)"
	if ! getent passwd "$uid" > /dev/null 2>&1; then
		for wrapper in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do
			if [ -s "$wrapper" ]; then
				NSS_WRAPPER_PASSWD="$(mktemp)"
				NSS_WRAPPER_GROUP="$(mktemp)"
				export LD_PRELOAD="$wrapper" NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
				printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$uid" "$(id -g)" "$PGDATA" > "$NSS_WRAPPER_PASSWD"
				printf 'postgres:x:%s:\n' "$(id -g)" > "$NSS_WRAPPER_GROUP"
				break
			fi
		done
	fi

	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		set -- --waldir "$POSTGRES_INITDB_WALDIR" "$@"
	fi
	# initdb refuses an empty --pwfile, hence the trailing newline.
	eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") '"$POSTGRES_INITDB_ARGS"' "$@"'

	if [[ "${LD_PRELOAD:-}" == */libnss_wrapper.so ]]; then
		rm -f "$NSS_WRAPPER_PASSWD" "$NSS_WRAPPER_GROUP"
		unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
	fi
}

# Allow TCP connections from everywhere with POSTGRES_HOST_AUTH_METHOD, which
# defaults to the server's password_encryption (scram-sha-256 on 15).
pg_setup_hba_conf() {
	if [ "${1:-}" = postgres ]; then
		shift
	fi
	local method
	method="$(postgres -C password_encryption "$@")"
	: "${POSTGRES_HOST_AUTH_METHOD:=$method}"
	{
		printf '\n'
		if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
			printf '# warning: trust is enabled for all TCP connections\n'
		fi
		printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
	} >> "$PGDATA/pg_hba.conf"
}

# Temporary server on the unix socket only, for setup and init scripts.
docker_temp_server_start() {
	if [ "${1:-}" = postgres ]; then
		shift
	fi
	set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
	PGUSER="${PGUSER:-$POSTGRES_USER}" \
		pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

docker_temp_server_stop() {
	PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

# docker_process_sql [psql args]: run SQL (stdin or -f FILE) against
# POSTGRES_DB on the unix socket as POSTGRES_USER, stopping on errors.
docker_process_sql() {
	local runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	if [ -n "$POSTGRES_DB" ]; then
		runner+=(--dbname "$POSTGRES_DB")
	fi
	PGHOST='' PGHOSTADDR='' "${runner[@]}" "$@"
}

docker_setup_db() {
	local db="$POSTGRES_DB" exists
	exists="$(
		POSTGRES_DB='' docker_process_sql --dbname postgres --set db="$db" --tuples-only \
			<<< "SELECT 1 FROM pg_database WHERE datname = :'db' ;"
	)"
	if [ -z "$exists" ]; then
		POSTGRES_DB='' docker_process_sql --dbname postgres --set db="$db" \
			<<< 'CREATE DATABASE :"db" ;'
		printf '\n'
	fi
}

# docker_process_init_files FILE...: run init files by extension. Executable
# *.sh files are run, the others are sourced (they can use docker_process_sql).
docker_process_init_files() {
	# shellcheck disable=SC2034  # kept for init scripts that use "${psql[@]}"
	psql=(docker_process_sql)
	printf '\n'
	local f
	for f; do
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then
					printf '%s: running %s\n' "$0" "$f"
					"$f"
				else
					printf '%s: sourcing %s\n' "$0" "$f"
					# shellcheck disable=SC1090
					. "$f"
				fi
				;;
			*.sql) printf '%s: running %s\n' "$0" "$f"; docker_process_sql -f "$f" ;;
			*.sql.gz) printf '%s: running %s\n' "$0" "$f"; gzip -dc "$f" | docker_process_sql ;;
			*.sql.xz) printf '%s: running %s\n' "$0" "$f"; xz -dc "$f" | docker_process_sql ;;
			*.sql.zst) printf '%s: running %s\n' "$0" "$f"; zstd -dc "$f" | docker_process_sql ;;
			*) printf '%s: ignoring %s\n' "$0" "$f" ;;
		esac
		printf '\n'
	done
}

# True when the arguments make postgres print something and exit.
_pg_want_help() {
	local arg
	for arg; do
		case "$arg" in
			-'?' | --help | --describe-config | -V | --version) return 0 ;;
		esac
	done
	return 1
}

_main() {
	# A first argument that looks like a flag means "postgres FLAGS...".
	if [ "${1:0:1}" = '-' ]; then
		set -- postgres "$@"
	fi

	if [ "$1" = postgres ] && ! _pg_want_help "$@"; then
		docker_setup_env
		docker_create_db_directories
		if [ "$(id -u)" = 0 ]; then
			# Start again as postgres (uid 999), keeping the environment.
			exec setpriv --reuid=postgres --regid=postgres --init-groups \
				"${BASH_SOURCE[0]}" "$@"
		fi

		if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
			docker_verify_minimum_env
			# Fail early, before initdb, if the init directory is unreadable.
			ls /docker-entrypoint-initdb.d/ > /dev/null

			docker_init_database_dir
			pg_setup_hba_conf "$@"

			# Needed when POSTGRES_INITDB_ARGS asks for password auth on the socket.
			export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
			docker_temp_server_start "$@"
			docker_setup_db
			docker_process_init_files /docker-entrypoint-initdb.d/*
			docker_temp_server_stop
			unset PGPASSWORD

			printf '\nPostgreSQL init process complete; ready for start up.\n\n'
		else
			printf '\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n\n'
		fi
	fi

	exec "$@"
}

if ! _is_sourced; then
	_main "$@"
fi
