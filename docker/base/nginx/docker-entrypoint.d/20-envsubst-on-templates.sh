#!/bin/sh
# Render every $NGINX_ENVSUBST_TEMPLATE_DIR/**/*$NGINX_ENVSUBST_TEMPLATE_SUFFIX
# (default /etc/nginx/templates/*.template) into $NGINX_ENVSUBST_OUTPUT_DIR
# (default /etc/nginx/conf.d), keeping sub-folders and dropping the suffix.
# Only variables that are set in the environment (and match
# NGINX_ENVSUBST_FILTER, a regular expression, if given) are substituted, so
# nginx's own $variables survive.
set -e

ME="$(basename "$0")"

log() {
	if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
		echo "$ME: $*"
	fi
}

template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
filter="${NGINX_ENVSUBST_FILTER:-}"

[ -d "$template_dir" ] || exit 0
if [ ! -w "$output_dir" ]; then
	log "ERROR: $template_dir exists, but $output_dir is not writable"
	exit 0
fi

# shellcheck disable=SC2016
defined_envs="$(awk -v filter="$filter" 'END {
	for (name in ENVIRON) {
		if (name ~ filter) { printf "${%s} ", name }
	}
}' < /dev/null)"

find "$template_dir" -follow -type f -name "*$suffix" -print | sort | while IFS= read -r template; do
	relative_path="${template#"$template_dir/"}"
	output_path="$output_dir/${relative_path%"$suffix"}"
	mkdir -p "$(dirname "$output_path")"
	log "Running envsubst on $template to $output_path"
	envsubst "$defined_envs" < "$template" > "$output_path"
done
