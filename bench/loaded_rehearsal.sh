#!/bin/bash
# CI on a busy machine: a fresh clone of this repository's HEAD runs the README's first
# quick-start command and then `CI=true bash .ci/run` (default and slow tests), with two busy
# loops beside it, as issue 20 asked ("green on a busy machine").
#   bash bench/loaded_rehearsal.sh [DIR]     (DIR: where to clone, default /tmp/hpo-loaded)
set -u
src=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
D=${1:-/tmp/hpo-loaded}
rm -rf "$D" && git clone -q "$src" "$D" && cd "$D" || exit 1
python3 -c "while True: pass" & B1=$!
python3 -c "while True: pass" & B2=$!
trap 'kill $B1 $B2 2>/dev/null' EXIT
echo "head $(git rev-parse --short HEAD) start $(date +%T)"
start=$(date +%s)
bash -c "$(grep -m1 '^python3 -m venv .*hpo search' README.md)" > "$D.quick.log" 2>&1
echo "quick start rc=$? in $(( $(date +%s) - start )) s (log: $D.quick.log)"
start=$(date +%s)
CI=true bash .ci/run > "$D.ci.log" 2>&1
echo "ci rc=$? in $(( $(date +%s) - start )) s (log: $D.ci.log)"
grep -E "^=+ .*(passed|failed)" "$D.ci.log"
