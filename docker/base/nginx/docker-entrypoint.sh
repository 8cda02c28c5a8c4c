#!/bin/sh
# Entrypoint of mysaaschat/nginx, with the contract of the official nginx
# image: when the command is nginx (or nginx-debug), every executable
# /docker-entrypoint.d/*.sh is run and every executable *.envsh is sourced
# (so it can export variables for the next scripts), in version order; then
# the command is exec'd. NGINX_ENTRYPOINT_QUIET_LOGS=1 silences this script.
set -e

entrypoint_log() {
	if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
		echo "$@"
	fi
}

if [ "$1" = nginx ] || [ "$1" = nginx-debug ]; then
	scripts="$(find /docker-entrypoint.d/ -mindepth 1 -maxdepth 1 -follow -type f -print 2>/dev/null | sort -V)"
	if [ -n "$scripts" ]; then
		entrypoint_log "$0: /docker-entrypoint.d/ is not empty, will attempt to perform configuration"
		entrypoint_log "$0: Looking for shell scripts in /docker-entrypoint.d/"
		while IFS= read -r f; do
			case "$f" in
				*.envsh)
					if [ -x "$f" ]; then
						entrypoint_log "$0: Sourcing $f"
						# shellcheck disable=SC1090
						. "$f"
					else
						entrypoint_log "$0: Ignoring $f, not executable"
					fi
					;;
				*.sh)
					if [ -x "$f" ]; then
						entrypoint_log "$0: Launching $f"
						"$f"
					else
						entrypoint_log "$0: Ignoring $f, not executable"
					fi
					;;
				*) entrypoint_log "$0: Ignoring $f" ;;
			esac
		done <<SCRIPTS
$scripts
SCRIPTS
		entrypoint_log "$0: Configuration complete; ready for start up"
	else
		entrypoint_log "$0: No files found in /docker-entrypoint.d/, skipping configuration"
	fi
fi

exec "$@"
