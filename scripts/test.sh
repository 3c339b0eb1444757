#!/usr/bin/env bash
# Run bottle's whole test suite: unit tests, and the contract and
# integration suites against real Docker, rootful Podman and rootless Podman.
# Sets up what is missing first (scripts/setup.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rootless_user="${BOTTLE_ROOTLESS_USER:-bottle-rootless}"
export BOTTLE_ROOTLESS_USER="$rootless_user"
# A missing engine fails the run instead of skipping its tests.
export BOTTLE_REQUIRE_ENGINES=1
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
