#!/usr/bin/env bash
# Set up everything bottle needs on a fresh Debian 12 machine, as root:
# the container engines (Docker, rootful and rootless Podman) and their API
# services, a virtualenv in .venv with bottle installed, and the local base
# image in every engine (no registry is needed). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'setup: %s\n' "$*" >&2; }

bash scripts/engines.sh

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
fi
say "installing bottle into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e '.[test,sidecar]'

rootless_user="${BOTTLE_ROOTLESS_USER:-bottle-rootless}"
rootless_url="unix:///run/user/$(id -u "$rootless_user")/podman/podman.sock"
say "bootstrapping the base image into docker, podman and rootless podman"
.venv/bin/bottle --runtime docker images bootstrap
.venv/bin/bottle --runtime podman images bootstrap
BOTTLE_PODMAN_URL="$rootless_url" .venv/bin/bottle --runtime podman images bootstrap
say "done"
