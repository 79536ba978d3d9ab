#!/usr/bin/env bash
# Two ptm builds side by side on `ptm bench`: A and B alternate, one timed round each per
# pass, for ROUNDS passes; prints each workload's median under A and B and the ratio B/A
# (above 1: B does more per second, or for ms/text, takes longer), with the CPU's flags.
# Usage: bash bench/ab.sh PTM_A PTM_B [ROUNDS] [ptm bench flags...]
#   e.g. git worktree add /tmp/base REV && (cd /tmp/base && cargo build --release -p ptm-cli)
#        cargo build --release -p ptm-cli
#        bash bench/ab.sh /tmp/base/target/release/ptm target/release/ptm 5 --dtype f32
set -euo pipefail
a=$1 b=$2 rounds=${3:-5}
shift $(( $# < 3 ? $# : 3 ))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for r in $(seq "$rounds"); do
  for side in a b; do
    bin=$a; [ "$side" = b ] && bin=$b
    "$bin" bench --rounds 1 --format json -q "$@" > "$work/$side-$r.json"
  done
done
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512[a-z_0-9]*|amx[a-z_0-9]*|avx_vnni)$' | tr '\n' ' ')"
python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
runs = {s: [json.load(open(f"{work}/{s}-{r}.json")) for r in range(1, rounds + 1)] for s in "ab"}
print(f"{'workload':16} {'A':>10} {'B':>10} {'B/A':>6}  unit   ({rounds} interleaved rounds, medians)")
for i, w in enumerate(runs["a"][0]["results"]):
    med = {s: statistics.median(run["results"][i]["median"] for run in runs[s]) for s in "ab"}
    print(f"{w['workload']:16} {med['a']:10.2f} {med['b']:10.2f} {med['b'] / med['a']:6.3f}  {w['unit']}")
PY
