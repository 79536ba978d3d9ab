#!/usr/bin/env bash
# What bf16 and int8 (`--dtype`) cost in accuracy, written to results/precision.json:
#  - all-MiniLM-L6-v2 embeddings of the 852 rotten_tomatoes test sentences, cosine to f32;
#  - the rotten_tomatoes fine-tune of RESULTS.md (scripts/finetune-results.sh rt, run first
#    when its model is missing) evaluated in each dtype.
# Usage: bash scripts/precision-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ptm-cli
ptm=target/release/ptm
data=../shared/data/rotten_tomatoes
minilm=$(bash tools/fetch-minilm.sh)
rt=${PTM_RESULTS_TMP:-/tmp/ptm-finetune}/rt
[ -f "$rt/config.json" ] || bash scripts/finetune-results.sh rt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -c 'import json,sys; [print(json.loads(l)["text"].replace("\n", " ")) for l in open(sys.argv[1])]' \
  "$data/test.jsonl" > "$work/texts.txt"
for dtype in f32 bf16 int8; do
  $ptm embed --model "$minilm" --input "$work/texts.txt" --output "$work/emb-$dtype.jsonl" --dtype "$dtype"
  $ptm eval --model "$rt" --data "$data/test.jsonl" --max-length 64 --dtype "$dtype" --output "$work/eval-$dtype.json" > /dev/null
done
mkdir -p results
python3 - "$work" > results/precision.json <<'PY'
import json, math, sys
work = sys.argv[1]
def emb(d):
    return [json.loads(l)["embedding"] for l in open(f"{work}/emb-{d}.jsonl")]
def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
base = emb("f32")
out = {"embedding_cosine_to_f32": {}, "rotten_tomatoes": {}}
for d in ("bf16", "int8"):
    c = sorted(cos(a, b) for a, b in zip(base, emb(d)))
    out["embedding_cosine_to_f32"][d] = {"texts": len(c), "mean": sum(c) / len(c), "min": c[0], "p1": c[len(c) // 100]}
for d in ("f32", "bf16", "int8"):
    m = json.load(open(f"{work}/eval-{d}.json"))
    out["rotten_tomatoes"][d] = {"accuracy": m["accuracy"], "macro_f1": m["macro_avg"]["f1"], "eval_loss": m["eval_loss"]}
print(json.dumps(out, indent=2))
PY
cat results/precision.json
