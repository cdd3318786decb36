#!/usr/bin/env bash
# Instructions per input of the runtime's overhead (benches/overhead.rs) under callgrind: each
# setup's session::drive over N inputs, less what decoding (preprocess::decode) and
# preprocessing + inference (model::Model::logits, here a scripted runner) cost inside it; what
# is left is all the rest: the cascade and policy, spans, the answer, energy, the output line,
# the results log, the summary. Instruction counts repeat from run to run, unlike times on a
# shared machine: compare versions with them.
#
#   scripts/overhead_callgrind.sh [N] [cargo bench options, e.g. --profile dev]
#
# N defaults to 20. Needs valgrind (apt-get install valgrind). Prints a table, then some of the
# overhead's parts in the first setup.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20}"
shift || true
exe=$(cargo bench --no-run --bench overhead "$@" 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$exe" ] || { echo "cannot find the overhead bench executable" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Instructions collected inside overhead::$1 (session::drive over the N inputs), less those of
# preprocess::decode and model::Model::logits called there.
count() {
  EDGECASCADE_OVERHEAD_CALLGRIND="$n" RUST_LOG=warn valgrind --tool=callgrind \
    --callgrind-out-file="$out/$1.out" --toggle-collect="overhead::$1" \
    "$exe" >"$out/$1.stdout" 2>"$out/$1.log" || { cat "$out/$1.log" >&2; exit 1; }
  callgrind_annotate --inclusive=yes --threshold=100 "$out/$1.out" >"$out/$1.txt"
  local total decode logits
  total=$(ir "$1" 'PROGRAM TOTALS')
  decode=$(ir "$1" 'edgecascade::preprocess::decode ')
  logits=$(ir "$1" 'edgecascade::model::Model::logits ')
  # Decode and inference are millions of instructions per input: if either is missing, it was
  # inlined in this build and the figure would include it.
  [ "$decode" -gt 0 ] && [ "$logits" -gt 0 ] || { echo "no count for decode or logits: inlined?" >&2; exit 1; }
  echo $((total - decode - logits))
}

# Inclusive instructions of the first line of $1's profile that contains $2.
ir() {
  awk -v f="$2" 'index($0, f) { v = $1; gsub(",", "", v); print v; found = 1; exit } END { if (!found) print 0 }' "$out/$1.txt"
}

echo "$exe, $n inputs per setup"
printf '| setup | instructions per input |\n|---|---:|\n'
for setup in "cg_exit:exit at stage 0" "cg_forwarded:forwarded to stage 1" "cg_bare:exit at stage 0, bare (no log, no energy)"; do
  total=$(count "${setup%%:*}")
  printf '| %s | %d |\n' "${setup#*:}" $((total / n))
done

echo
echo "some of its parts in 'exit at stage 0' (inclusive instructions per input, overlapping; expf is the softmax's):"
grep -E 'math_config.h:__expf_fma|EnergyContext::fill|policy::decide|session::(answer_line|count)|Serialize for edgecascade::stage::Span>|format_escaped_str|alloc::fmt::format::format_inner' \
  "$out/cg_exit.txt" | awk -v n="$n" '{ v = $1; gsub(",", "", v); sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, ""); sub(/ \[.*/, ""); printf "%9d  %s\n", v / n, $0 }'
