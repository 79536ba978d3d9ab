"""Greedy decoding speed: `ptm generate` against transformers' generate() on PyTorch.

GPT-2 small (GPT2Config() defaults: 124M parameters, random weights), batch 1, a 32-token
prompt and 128 new tokens (EOS suppressed so both produce all 128). Both are timed the same way:
the time at which each new token is chosen; prefill = time to the first token, decode = mean
time per later token. PyTorch runs with 2 threads, ptm with its default (all cores, 2 here).
The systems alternate in rounds; medians go into BENCHMARKS.md.

Run: cargo build --release && $(tools/reference/setup-venv.sh) bench/generate.py [--rounds 5]
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessor, LogitsProcessorList

ROOT = Path(__file__).resolve().parents[1]
PTM = os.environ.get("PTM_BIN", str(ROOT / "target" / "release" / "ptm"))
import sys  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from embed import cpu_name, write_section  # noqa: E402


class Stamps(LogitsProcessor):
    """Records when each step's scores arrive (once per new token, as ptm's --timing does)."""

    def __init__(self, start):
        self.start, self.times = start, []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter() - self.start)
        return scores


def time_torch(model, ids, new_tokens):
    start = time.perf_counter()
    stamps = Stamps(start)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, logits_processor=LogitsProcessorList([stamps]),
                             pad_token_id=50256)
    end = time.perf_counter() - start
    assert out.shape[1] == ids.shape[1] + new_tokens
    t = stamps.times
    return {"prefill_ms": t[0] * 1e3, "decode_ms_per_token": (end - t[0]) / (new_tokens - 1) * 1e3 if new_tokens > 1 else 0,
            "tokens_per_s": new_tokens / end}


def time_ptm(model_dir, prompt, new_tokens, dtype="f32"):
    args = [PTM, "generate", "--model", str(model_dir), "--max-new-tokens", str(new_tokens),
            "--min-new-tokens", str(new_tokens), "--timing", "--dtype", dtype, prompt]
    r = subprocess.run(args, check=True, capture_output=True, text=True)
    t = json.loads(r.stderr.strip().splitlines()[-1])
    assert t["new_tokens"] == new_tokens and t["prompt_tokens"] == 32, t
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "gpt2-small-random"
        model = GPT2LMHeadModel(GPT2Config()).eval()
        model.save_pretrained(model_dir)
        # The real GPT-2 tokenizer files (MIT), so prompts tokenize as GPT-2's do.
        for f in ("vocab.json", "merges.txt"):
            (model_dir / f).write_bytes((ROOT / "tests" / "fixtures" / "tokenizers" / "gpt2" / f).read_bytes())
        # A prompt of exactly 32 tokens: " the" is one token, 32 times.
        prompt = " the" * 32
        ids = torch.full((1, 32), 262)
        # PyTorch's own int8: dynamic quantization of every nn.Linear (GPT-2's Conv1D layers are
        # not nn.Linear, so only lm_head is quantized; that is what quantize_dynamic gives).
        model_int8 = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        time_torch(model, ids, 4)  # warm-up
        time_torch(model_int8, ids, 4)
        dtypes = {"ptm": "f32", "ptm-bf16": "bf16", "ptm-int8": "int8"}
        runs = {s: [] for s in ("torch", "torch-int8", *dtypes)}
        for r in range(args.rounds):
            for s, d in dtypes.items():
                runs[s].append(time_ptm(model_dir, prompt, args.new_tokens, d))
            runs["torch"].append(time_torch(model, ids, args.new_tokens))
            runs["torch-int8"].append(time_torch(model_int8, ids, args.new_tokens))
            print(f"round {r + 1}: " + "; ".join(f"{s} {v[-1]['tokens_per_s']:.1f} tok/s" for s, v in runs.items()), flush=True)
    med = {s: {k: statistics.median(x[k] for x in v) for k in ("prefill_ms", "decode_ms_per_token", "tokens_per_s")}
           for s, v in runs.items()}
    t = med["torch"]
    body = [
        "## Text generation: GPT-2 small, greedy, CPU",
        "",
        f"`bench/generate.py`, {datetime.date.today()}, {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__} "
        f"(2 threads), transformers {transformers.__version__}; GPT2Config() defaults (124M parameters, random weights), "
        f"batch 1, 32 prompt tokens + {args.new_tokens} new tokens; medians of {args.rounds} interleaved rounds.",
        "",
        "| measure | PyTorch f32 | PyTorch int8 (quantize_dynamic) | ptm f32 | ptm bf16 | ptm int8 | "
        "ptm f32 / PyTorch f32 | ptm bf16 / PyTorch f32 | ptm int8 / PyTorch f32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, what, lower in (("tokens_per_s", "tokens/s, whole generation (higher is better)", False),
                             ("prefill_ms", "prefill (32 tokens), ms", True),
                             ("decode_ms_per_token", "decode, ms per token", True)):
        speed = (lambda a, b: b / a) if lower else (lambda a, b: a / b)
        cells = [f"{med[s][key]:.1f}" for s in ("torch", "torch-int8", *dtypes)]
        ratios = [f"{speed(med[s][key], t[key]):.2f}×" for s in dtypes]
        body.append(f"| {what} | " + " | ".join(cells + ratios) + " |")
    write_section(Path(args.output), "generate", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
