#!/usr/bin/env bash
# "Pretraining pays": fine-tune on rotten_tomatoes with 100% and 10% of the training labels,
# (a) all-MiniLM-L6-v2 against the same architecture from random weights, (b) the tiny BERT
# that ptm pretrains on data/austen (the demo's recipe) against the same tiny model from
# scratch, (c) likewise a tiny XLNet pretrained with the permutation objective. Writes results/pretraining-pays/<run>.json (metrics of the kept model) and
# results/pretraining-pays/<model>-<fraction>.png (held-out accuracy during training).
# The small split trains for more epochs (10 instead of 3 for the tiny model, 5 instead of 1 for
# MiniLM) so that both splits take a comparable number of steps.
# Usage: bash scripts/pretraining-pays.sh [tiny] [minilm] [xlnet]   (default: tiny minilm)
#        TINY_PRETRAIN_STEPS=N (default 2000) sets the tiny models' pretraining steps.
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

pair() { # prefix model fraction eval_every lr epochs: pretrained and random-weight runs, and their plot
  local prefix=$1 model=$2 f=$3; shift 3
  finetune "$prefix-pretrained-$f" "$model" "$f" "$@"
  finetune "$prefix-scratch-$f" "$model" "$f" "$@" --from-scratch
  "$ptm" plot "$out/$prefix-pretrained-$f" "$out/$prefix-scratch-$f" --metric accuracy -o "$res/$prefix-$f.png" > /dev/null
}

for part in "${@:-tiny minilm}"; do
  for p in $part; do
    case $p in
      tiny)
        steps=${TINY_PRETRAIN_STEPS:-2000}
        tiny="$out/tiny-bert-$steps"
        if [ ! -f "$tiny/model.safetensors" ]; then
          "$ptm" pretrain --config data/tiny-bert.json --tokenizer data/tokenizer \
            --train data/austen/prideprejudice.txt data/austen/sensesensibility.txt \
            --output "$tiny" --max-steps "$steps" --batch-size 16 --seq-len 64 --lr 1e-3 \
            --warmup-steps $((steps / 10)) --save-every 100000 --overwrite-output-dir -q
        fi
        for f in 1.0 0.1; do
          if [ $f = 1.0 ]; then every=60 epochs=3; else every=24 epochs=10; fi
          pair tiny "$tiny" $f $every 1e-3 $epochs
        done ;;
      xlnet)
        steps=${TINY_PRETRAIN_STEPS:-2000}
        xl="$out/tiny-xlnet-$steps"
        if [ ! -f "$xl/model.safetensors" ]; then
          "$ptm" pretrain --objective plm --config data/tiny-xlnet.json --tokenizer data/tokenizer-xlnet \
            --train data/austen/prideprejudice.txt data/austen/sensesensibility.txt \
            --output "$xl" --max-steps "$steps" --batch-size 16 --seq-len 64 --lr 1e-3 \
            --warmup-steps $((steps / 10)) --save-every 100000 --overwrite-output-dir -q
        fi
        for f in 1.0 0.1; do
          if [ $f = 1.0 ]; then every=60 epochs=3; else every=24 epochs=10; fi
          pair tiny-xlnet "$xl" $f $every 1e-3 $epochs
        done ;;
      minilm)
        minilm=$(bash tools/fetch-minilm.sh)
        for f in 0.1 1.0; do
          if [ $f = 1.0 ]; then every=40 epochs=1; else every=12 epochs=5; fi
          pair minilm "$minilm" $f $every 5e-5 $epochs
        done ;;
      *) echo "unknown part $p" >&2; exit 2 ;;
    esac
  done
done
