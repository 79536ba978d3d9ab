#!/usr/bin/env bash
# Data-parallel speed on one machine: the small BERT MLM training step of `ptm bench`
# (256 hidden, 4 layers, 4 heads, intermediate 1024, vocab 30522; global batch 16 x 128 tokens)
# pretrained on the Austen novels, 1 process x 2 threads against `mpirun -np 2` x 1 thread,
# interleaved in rounds. Prints each run's tokens/s (the mean of its logged steps after the
# first log, which holds the warm-up) and rank 0's share of step time in the all-reduce; then,
# in the same rounds, the seconds of the held-out evaluation (the first 200,000 characters of
# Persuasion, batches of 16 x 128 tokens, evaluated twice: before and after one step), whole in
# 1 process x 2 threads and shared by 2 processes x 1 thread.
# Usage: bash bench/data-parallel.sh [ROUNDS] [STEPS]   (default 3 rounds of 40 steps)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} steps=${2:-40}
bash scripts/setup-mpi.sh
cargo build --release --locked -q -p ptm-cli --features mpi
ptm=$PWD/target/release/ptm
tokenizer=$(bash tools/fetch-minilm.sh)   # the bert-base-uncased vocabulary (30,522)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/config.json" <<'JSON'
{"model_type": "bert", "vocab_size": 30522, "hidden_size": 256, "num_hidden_layers": 4,
 "num_attention_heads": 4, "intermediate_size": 1024, "max_position_embeddings": 512}
JSON
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
args=(pretrain --config "$work/config.json" --tokenizer "$tokenizer" --train data/austen/prideprejudice.txt
      --data-cache "$work/cache" --seq-len 128 --log-every 5 --save-every 100000 -q)
head -c 200000 data/austen/persuasion.txt > "$work/held-out.txt"
evaluation=(--eval "$work/held-out.txt" --eval-batch-size 16 --max-steps 1)
eval_secs() { grep -o 'evaluation: .* in [0-9.]* s' | grep -o '[0-9.]* s$' | cut -d' ' -f1; }
rate() { # mean tokens/s of the logged steps after the first
  grep -o '"tokens_per_s":[0-9.]*' "$1/train_log.jsonl" | cut -d: -f2 | tail -n +2 | awk '{s+=$1; n++} END {printf "%.0f", s/n}'
}
for r in $(seq "$rounds"); do
  "$ptm" "${args[@]}" --max-steps "$steps" --output "$work/one-$r" --batch-size 16 --threads 2
  one=$(rate "$work/one-$r")
  share=$(mpirun -np 2 --oversubscribe --mca btl self,vader "$ptm" "${args[@]}" --max-steps "$steps" --output "$work/two-$r" --batch-size 8 \
          --threads 1 2>&1 | grep -o 'all-reduce: .*')
  two=$(rate "$work/two-$r")
  echo "round $r: 1 process x 2 threads $one tokens/s; 2 processes x 1 thread $two tokens/s; $share"
done
for r in $(seq "$rounds"); do
  one=$("$ptm" "${args[@]}" "${evaluation[@]}" --output "$work/eval-one-$r" --batch-size 16 --threads 2 2>&1 | eval_secs)
  two=$(mpirun -np 2 --oversubscribe --mca btl self,vader "$ptm" "${args[@]}" "${evaluation[@]}" --output "$work/eval-two-$r" \
        --batch-size 8 --threads 1 2>&1 | eval_secs)
  echo "round $r: held-out evaluation 1 process x 2 threads $one s; 2 processes x 1 thread $two s"
done
