#!/bin/sh
# Entrypoint of mysaaschat/redis, with the contract of the official redis:7
# image:
#   - a first argument that is a flag or a *.conf file means redis-server;
#   - as root, /data (the working directory) is handed to the redis user and
#     the server is re-executed as redis;
#   - without a config file that sets protected-mode, the server runs with
#     "--protected-mode no" (it binds all interfaces by default), so other
#     containers can reach it; use a password or a config file in production.
set -e

case "$1" in
	-* | *.conf) set -- redis-server "$@" ;;
esac

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

# Files written by the server are private unless a umask was chosen already.
if [ "$(umask)" = 0022 ]; then
	umask 0077
fi

if [ "$1" = redis-server ]; then
	set_protected_mode=1
	config_file=
	if [ -f "${2:-}" ]; then
		config_file="$2"
		if grep -q '^protected-mode' "$config_file"; then
			set_protected_mode=
		fi
	fi
	if [ -n "$set_protected_mode" ]; then
		shift
		if [ -n "$config_file" ]; then
			shift
			set -- "$config_file" --protected-mode no "$@"
		else
			set -- --protected-mode no "$@"
		fi
		set -- redis-server "$@"
	fi
fi

exec "$@"
