#!/usr/bin/env bash
# Fine-tunes all-MiniLM-L6-v2 with ptm on the real data sets of RESULTS.md and writes each
# kept model's metrics to results/finetune/<task>.json. Long: about an hour on 2 cores.
# Usage: bash scripts/finetune-results.sh [NAME...]   (default: all of rt sms wnut bible qa)
#        SEED=N (default 42) picks the seed; other seeds write <task>-seed<N>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ptm-cli
ptm=target/release/ptm
data=../shared/data
minilm=$(bash tools/fetch-minilm.sh)
out=${PTM_RESULTS_TMP:-/tmp/ptm-finetune}
mkdir -p "$out" results/finetune
seed=${SEED:-42}
suffix=$([ "$seed" = 42 ] || echo "-seed$seed")
common=(--model "$minilm" --seed "$seed" --weight-decay 0.01 --warmup-ratio 0.1 --save-every 100000 -q)

run() { # name task train eval [extra...]
  local name=$1 task=$2 train=$3 eval=$4; shift 4
  rm -rf "$out/$name$suffix"
  local start=$SECONDS
  $ptm finetune --task "$task" --train "$train" --eval "$eval" --output "$out/$name$suffix" "${common[@]}" "$@"
  $ptm eval --model "$out/$name$suffix" --data "$eval" --output "results/finetune/$name$suffix.json" "${eval_args[@]}" > /dev/null
  echo "$name$suffix: $((SECONDS - start)) s"
}

for name in "${@:-rt sms wnut bible qa}"; do
  for n in $name; do
    case $n in
      rt) eval_args=(--max-length 64)
          run rt seq-cls $data/rotten_tomatoes/train.jsonl $data/rotten_tomatoes/test.jsonl \
            --epochs 1 --batch-size 32 --lr 5e-5 --max-length 64 ;;
      sms) eval_args=(--max-length 128)
          run sms seq-cls $data/sms_spam/train.jsonl $data/sms_spam/test.jsonl \
            --epochs 1 --batch-size 32 --lr 5e-5 --max-length 128 ;;
      wnut) eval_args=(--max-length 128)
          run wnut token-cls $data/wnut16_ner/train.jsonl $data/wnut16_ner/test.jsonl \
            --epochs 2 --batch-size 16 --lr 5e-5 --max-length 128 ;;
      bible) python3 tools/data/bible_pairs.py $data/bible_parallel/verses.jsonl "$out/bible-data" > /dev/null
          eval_args=(--max-length 128)
          run bible similarity "$out/bible-data/train.jsonl" "$out/bible-data/test.jsonl" \
            --epochs 1 --batch-size 32 --lr 2e-5 --max-length 128 --train-fraction 0.5 ;;
      qa) eval_args=(--max-length 256 --doc-stride 64)
          run qa qa data/qa/train.jsonl data/qa/test.jsonl \
            --epochs 2 --batch-size 16 --lr 5e-5 --max-length 256 --doc-stride 64 ;;
      *) echo "unknown run $n" >&2; exit 2 ;;
    esac
  done
done
