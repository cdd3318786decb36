#!/usr/bin/env bash
# Instructions per input of the runtime's overhead (benches/overhead.rs) under callgrind:
# each setup's session::drive over N inputs, minus the same decode, preprocess and (scripted)
# inference work run alone. Instruction counts repeat from run to run, unlike times on a shared
# machine: compare versions with them.
#
#   scripts/overhead_callgrind.sh [N] [cargo bench options, e.g. --profile dev]
#
# N defaults to 20. Needs valgrind (apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20}"
shift || true
exe=$(cargo bench --no-run --bench overhead "$@" 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$exe" ] || { echo "cannot find the overhead bench executable" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
EDGECASCADE_OVERHEAD_CALLGRIND="$n" RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" \
  "$exe" >"$out/stdout" 2>"$out/valgrind.log" || { cat "$out/valgrind.log" >&2; exit 1; }
callgrind_annotate --inclusive=yes --threshold=100 "$out/cg.out" >"$out/annotate.txt"
# Inclusive instructions of one of the bench's cg_* functions.
ir() {
  awk -v f="overhead::$1" '$0 ~ f"( |$)" { gsub(",", "", $1); print $1; exit }' "$out/annotate.txt"
}
echo "$exe, $n inputs per setup; instructions (Ir) per input:"
printf '| setup | session::drive | decode + preprocess + infer alone | overhead |\n|---|---:|---:|---:|\n'
row() {
  local d e
  d=$(ir "$2") e=$(ir "$3")
  [ -n "$d" ] && [ -n "$e" ] || { echo "no count for $2 or $3 in callgrind's output" >&2; exit 1; }
  printf '| %s | %d | %d | %d |\n' "$1" $((d / n)) $((e / n)) $(((d - e) / n))
}
row "exit at stage 0" cg_exit_drive cg_exit_excluded
row "forwarded to stage 1" cg_forwarded_drive cg_forwarded_excluded
row "exit at stage 0, bare (no log, no energy)" cg_bare_drive cg_exit_excluded
