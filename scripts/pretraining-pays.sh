#!/usr/bin/env bash
# "Pretraining pays": fine-tune on rotten_tomatoes with 100% and 10% of the training labels,
# (a) all-MiniLM-L6-v2 against the same architecture from random weights, (b) the tiny BERT
# that ptm pretrains on data/austen (the demo's recipe) against the same tiny model from
# scratch. Writes results/pretraining-pays/<run>.json (metrics of the kept model) and
# results/pretraining-pays/<model>-<fraction>.png (held-out accuracy during training).
# Usage: bash scripts/pretraining-pays.sh [tiny] [minilm]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ptm-cli
ptm=target/release/ptm
rt=../shared/data/rotten_tomatoes
out=${PTM_RESULTS_TMP:-/tmp/ptm-finetune}/pays
res=results/pretraining-pays
mkdir -p "$out" "$res"

finetune() { # name model fraction eval_every lr epochs [extra...]
  local name=$1 model=$2 fraction=$3 every=$4 lr=$5 epochs=$6; shift 6
  rm -rf "$out/$name"
  "$ptm" finetune --task seq-cls --model "$model" --train $rt/train.jsonl --eval $rt/test.jsonl \
    --output "$out/$name" --train-fraction "$fraction" --eval-every "$every" --epochs "$epochs" \
    --batch-size 32 --lr "$lr" --warmup-ratio 0.1 --max-length 64 --seed 42 --save-every 100000 -q "$@" > /dev/null
  "$ptm" eval --model "$out/$name" --data $rt/test.jsonl --max-length 64 --output "$res/$name.json" > /dev/null
  echo "$name: $(grep -o '"accuracy": [0-9.]*' "$res/$name.json")"
}

for part in "${@:-tiny minilm}"; do
  for p in $part; do
    case $p in
      tiny)
        if [ ! -f "$out/tiny-bert/model.safetensors" ]; then
          "$ptm" pretrain --config data/tiny-bert.json --tokenizer data/tokenizer \
            --train data/austen/prideprejudice.txt data/austen/sensesensibility.txt \
            --output "$out/tiny-bert" --max-steps 500 --batch-size 16 --seq-len 64 --lr 1e-3 \
            --warmup-steps 50 --save-every 100000 -q
        fi
        for f in 1.0 0.1; do
          every=$([ $f = 1.0 ] && echo 60 || echo 6)
          finetune "tiny-pretrained-$f" "$out/tiny-bert" $f $every 1e-3 3
          finetune "tiny-scratch-$f" "$out/tiny-bert" $f $every 1e-3 3 --from-scratch
          "$ptm" plot "$out/tiny-pretrained-$f" "$out/tiny-scratch-$f" --metric accuracy -o "$res/tiny-$f.png" > /dev/null
        done ;;
      minilm)
        minilm=$(bash tools/fetch-minilm.sh)
        for f in 0.1 1.0; do
          every=$([ $f = 1.0 ] && echo 40 || echo 4)
          finetune "minilm-pretrained-$f" "$minilm" $f $every 5e-5 1
          finetune "minilm-scratch-$f" "$minilm" $f $every 5e-5 1 --from-scratch
          "$ptm" plot "$out/minilm-pretrained-$f" "$out/minilm-scratch-$f" --metric accuracy -o "$res/minilm-$f.png" > /dev/null
        done ;;
      *) echo "unknown part $p" >&2; exit 2 ;;
    esac
  done
done
