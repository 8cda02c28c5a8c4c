#!/bin/sh
# Add "listen [::]:80;" to the stock default.conf when the container has IPv6.
# A default.conf that differs from the image's is left alone.
set -e

ME="$(basename "$0")"
DEFAULT_CONF=/etc/nginx/conf.d/default.conf
PRISTINE=/usr/share/nginx/default.conf.dist

log() {
	if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
		echo "$ME: $*"
	fi
}

if [ ! -f /proc/net/if_inet6 ]; then
	log "info: IPv6 not available"
	exit 0
fi
if [ ! -f "$DEFAULT_CONF" ]; then
	log "info: $DEFAULT_CONF is not a file or does not exist"
	exit 0
fi
if ! touch "$DEFAULT_CONF" 2>/dev/null; then
	log "info: can not modify $DEFAULT_CONF (read-only file system?)"
	exit 0
fi
if ! cmp -s "$DEFAULT_CONF" "$PRISTINE"; then
	log "info: $DEFAULT_CONF differs from the image's version, not touching it"
	exit 0
fi

sed -i -E 's/^(\s*)listen 80;/&\n\1listen [::]:80;/' "$DEFAULT_CONF"
log "info: Enabled listen on IPv6 in $DEFAULT_CONF"
