#!/usr/bin/env bash
# Chinese: a tiny BERT (data/tiny-bert-chinese.json: data/tiny-bert.json with the 21,128-token
# bert-base-chinese vocabulary) pretrained by ptm on the Chinese text in ../shared/data (classical
# poetry and the chinese_sentiment training reviews, labels unused), then fine-tuned on
# chinese_sentiment with all and with a seeded 10% of the training labels (2 and 10 epochs),
# against the same model from random weights. Writes results/chinese/sentiment-<init>-<fraction>.json
# and results/chinese/accuracy-<fraction>.png.
# Usage: bash scripts/chinese.sh [FRACTION...]   (default: 1.0 0.1)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ptm-cli
ptm=target/release/ptm
zh=../shared/data
out=${PTM_RESULTS_TMP:-/tmp/ptm-finetune}/chinese
res=results/chinese
mkdir -p "$out" "$res"
if [ ! -f "$out/tiny-bert-zh/model.safetensors" ]; then
  "$ptm" pretrain --config data/tiny-bert-chinese.json --tokenizer tests/fixtures/tokenizers/bert-base-chinese \
    --train $zh/chinese_poetry/*.jsonl $zh/chinese_sentiment/train.jsonl --output "$out/tiny-bert-zh" \
    --max-steps 800 --batch-size 32 --seq-len 64 --lr 1e-3 --warmup-steps 80 --save-every 100000 --overwrite-output-dir -q
fi
for f in "${@:-1.0 0.1}"; do
  if [ "$f" = 1.0 ]; then epochs=2 every=100; else epochs=10 every=25; fi
  for init in pretrained scratch; do
    flag=(); [ $init = scratch ] && flag=(--from-scratch)
    run="sentiment-$init-$f"
    rm -rf "$out/$run"
    "$ptm" finetune --task seq-cls --model "$out/tiny-bert-zh" "${flag[@]}" \
      --train $zh/chinese_sentiment/train.jsonl --eval $zh/chinese_sentiment/test.jsonl \
      --output "$out/$run" --train-fraction "$f" --epochs $epochs --batch-size 32 --lr 1e-3 \
      --warmup-ratio 0.1 --max-length 64 --eval-every $every --seed 42 --save-every 100000 -q > /dev/null
    "$ptm" eval --model "$out/$run" --data $zh/chinese_sentiment/test.jsonl --max-length 64 \
      --output "$res/$run.json" > /dev/null
    echo "$run: $(grep -o '"accuracy": [0-9.]*' "$res/$run.json")"
  done
  "$ptm" plot "$out/sentiment-pretrained-$f" "$out/sentiment-scratch-$f" --metric accuracy -o "$res/accuracy-$f.png" > /dev/null
done
