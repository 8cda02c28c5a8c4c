#!/usr/bin/env bash
# Entrypoint of mysaaschat/rabbitmq, with the contract of the official
# rabbitmq:3 image: commands named rabbitmq* started as root are re-executed
# as the rabbitmq user (after handing /var/lib/rabbitmq to it for the server);
# the RABBITMQ_* variables that the official image rejects are rejected too;
# RABBITMQ_DEFAULT_USER / _PASS / _VHOST are read by the server itself.
set -euo pipefail

if [[ "$1" == rabbitmq* ]] && [ "$(id -u)" = 0 ]; then
	if [ "$1" = rabbitmq-server ]; then
		find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq '{}' +
		# Create the Erlang cookie before the server starts, so that a CLI
		# tool run early by `docker exec` as root (a healthcheck) reads it
		# instead of creating one that the rabbitmq user cannot read.
		cookie_file=/var/lib/rabbitmq/.erlang.cookie
		if [ ! -e "$cookie_file" ]; then
			cookie="$(set +o pipefail; LC_ALL=C tr -dc '[:upper:]' < /dev/urandom | head -c 20)"
			(umask 0277 && printf '%s' "$cookie" > "$cookie_file")
			unset cookie
			chown rabbitmq:rabbitmq "$cookie_file"
		fi
	fi
	exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "${BASH_SOURCE[0]}" "$@"
fi

deprecated_env_vars=(
	RABBITMQ_DEFAULT_PASS_FILE
	RABBITMQ_DEFAULT_USER_FILE
	RABBITMQ_MANAGEMENT_SSL_CACERTFILE
	RABBITMQ_MANAGEMENT_SSL_CERTFILE
	RABBITMQ_MANAGEMENT_SSL_DEPTH
	RABBITMQ_MANAGEMENT_SSL_FAIL_IF_NO_PEER_CERT
	RABBITMQ_MANAGEMENT_SSL_KEYFILE
	RABBITMQ_MANAGEMENT_SSL_VERIFY
	RABBITMQ_SSL_CACERTFILE
	RABBITMQ_SSL_CERTFILE
	RABBITMQ_SSL_DEPTH
	RABBITMQ_SSL_FAIL_IF_NO_PEER_CERT
	RABBITMQ_SSL_KEYFILE
	RABBITMQ_SSL_VERIFY
	RABBITMQ_VM_MEMORY_HIGH_WATERMARK
)
has_deprecated=
for name in "${deprecated_env_vars[@]}"; do
	if [ -n "${!name:-}" ]; then
		echo >&2 "error: $name is set but deprecated"
		has_deprecated=1
	fi
done
if [ -n "$has_deprecated" ]; then
	echo >&2 'error: deprecated environment variables detected'
	echo >&2 'Please use a configuration file (/etc/rabbitmq/conf.d/*.conf) instead.'
	exit 1
fi

# Use long node names when the container's long and short host names differ.
if [ -z "${RABBITMQ_USE_LONGNAME:-}" ] && [ "$(hostname)" != "$(hostname -s)" ]; then
	export RABBITMQ_USE_LONGNAME=true
fi

exec "$@"
