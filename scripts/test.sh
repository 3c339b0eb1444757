#!/usr/bin/env bash
# Run bottle's whole test suite: unit tests, and the contract, integration
# and end-to-end suites against real Docker, rootful Podman and rootless
# Podman. Sets up what is missing first (scripts/setup.sh). Extra arguments
# go to every pytest run (e.g. -v, -x, -k NAME).
#
# One pytest process per engine, plus one for everything that needs no engine;
# one after another, or at the same time with BOTTLE_TEST_PARALLEL=1. Each writes its
# own log; the logs are printed whole when all are done, then one closing line
# adds them up. For a part of the suite, call pytest directly, e.g.
#     .venv/bin/python -m pytest tests/unit
#     .venv/bin/python -m pytest tests/contract -m podman_rootless
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rootless_user="${BOTTLE_ROOTLESS_USER:-bottle-rootless}"
export BOTTLE_ROOTLESS_USER="$rootless_user"
# A missing engine fails the run instead of skipping its tests.
export BOTTLE_REQUIRE_ENGINES=1

# The sidecar wheels are cached per requirement set; fetch them once before the
# parallel runs, so no two of them download into the same cache at once.
.venv/bin/python -c 'import platformdirs
from bottle.sidecars._wheels import ensure_wheels
ensure_wheels(platformdirs.user_cache_dir("bottle"), on_progress=print)'

groups=("not engine" "docker" "podman" "podman_rootless")
names=("no-engine" "docker" "podman" "podman_rootless")
log_dir="$(mktemp -d "${TMPDIR:-/tmp}/bottle-tests.XXXXXX")"
pids=()
for i in "${!groups[@]}"; do
    .venv/bin/python -m pytest -p no:cacheprovider -m "${groups[$i]}" "$@" \
        >"$log_dir/${names[$i]}.log" 2>&1 &
    pids+=($!)
    printf 'test: started %s (pid %s, log %s)\n' "${names[$i]}" "$!" "$log_dir/${names[$i]}.log" >&2
    # One group at a time for now: rootless Podman image builds were killed
    # ("signal: killed") when all four ran at once on a 2-core machine.
    if [ "${BOTTLE_TEST_PARALLEL:-0}" != 1 ]; then
        set +e; wait "$!"; echo $? >"$log_dir/${names[$i]}.rc"; set -e
    fi
done

rcs=()
for i in "${!pids[@]}"; do
    if [ -f "$log_dir/${names[$i]}.rc" ]; then
        rc=$(cat "$log_dir/${names[$i]}.rc")
    else
        set +e; wait "${pids[$i]}"; rc=$?; set -e
    fi
    rcs+=("$rc")
    printf 'test: %s finished with exit code %s\n' "${names[$i]}" "$rc" >&2
done

passed=0; failed=0; skipped=0; errors=0; xfailed=0; status=0; empty=0
for i in "${!names[@]}"; do
    log="$log_dir/${names[$i]}.log"
    printf '\n######## %s (pytest -m "%s") ########\n' "${names[$i]}" "${groups[$i]}"
    cat "$log"
    summary="$(grep -E '^=+ .* in [0-9.]+s' "$log" | tail -n 1 || true)"
    count() { grep -oE "[0-9]+ $1" <<<"$summary" | grep -oE '^[0-9]+' || echo 0; }
    passed=$((passed + $(count passed))); failed=$((failed + $(count failed)))
    skipped=$((skipped + $(count skipped))); errors=$((errors + $(count error)))
    xfailed=$((xfailed + $(count xfailed)))
    case "${rcs[$i]}" in
        0) ;;
        5) empty=$((empty + 1)) ;;
        *) status=1 ;;
    esac
done
rm -rf "$log_dir"
printf '\n'
for i in "${!names[@]}"; do printf 'test: %-16s exit %s\n' "${names[$i]}" "${rcs[$i]}"; done
if [ "$empty" -eq "${#names[@]}" ]; then
    echo "test: no test was collected"
    exit 5
fi
if [ "$empty" -gt 0 ]; then
    echo "test: a part of the suite collected no tests; that is a broken suite" >&2
    status=1
fi
echo "test: $xfailed xfailed (declared gaps of the in-memory double and of engines)"
echo "total: $passed passed, $((failed + errors)) failed, $skipped skipped"
exit "$status"
