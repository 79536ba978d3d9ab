"""Training-step speed: `ptm pretrain` against a PyTorch loop doing the same work.

Workloads (f32, CPU, dropout off, batch 16 x 128 tokens, AdamW, clipping to norm 1):
  small BERT MLM   hidden 256, 4 layers, 4 heads, FFN 1024, bert-base-uncased vocabulary
                   (30,522; 11.2M parameters), 15% masking
  small GPT-2 CLM  n_embd 256, 4 layers, 4 heads, the GPT-2 vocabulary (50,257)
on the Austen novels in data/. ptm's tokens/s come from its train_log.jsonl (steps after the
first few); PyTorch's from the same steps of a loop with transformers' models and MLM collator
(2 threads). The systems alternate in rounds; medians go into BENCHMARKS.md.

Run: cargo build --release && tools/fetch-minilm.sh && $(tools/reference/setup-venv.sh) bench/train.py
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import (BertConfig, BertForMaskedLM, BertTokenizerFast, DataCollatorForLanguageModeling,
                          GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast)

ROOT = Path(__file__).resolve().parents[1]
PTM = os.environ.get("PTM_BIN", str(ROOT / "target" / "release" / "ptm"))
sys.path.insert(0, str(ROOT / "bench"))
from embed import cpu_name, write_section  # noqa: E402

TRAIN = [ROOT / "data" / "austen" / "prideprejudice.txt", ROOT / "data" / "austen" / "sensesensibility.txt"]
STEPS, WARM, BATCH, SEQ = 12, 4, 16, 128


def bert_config(vocab):
    return dict(model_type="bert", vocab_size=vocab, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                intermediate_size=1024, max_position_embeddings=512, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)


def gpt2_config():
    return dict(model_type="gpt2", vocab_size=50257, n_embd=256, n_layer=4, n_head=4, n_positions=512,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def paragraphs():
    out = []
    for f in TRAIN:
        out += [p.strip() for p in f.read_text().split("\n\n") if p.strip()]
    return out


def blocks(tok, size, wrap=None):
    ids = [i for p in paragraphs() for i in tok(p, add_special_tokens=False)["input_ids"]]
    out = [ids[i:i + size] for i in range(0, len(ids) - size + 1, size)]
    return [[wrap[0]] + b + [wrap[1]] for b in out] if wrap else out


def time_ptm(objective, config, tokenizer_dir, work):
    cfg_path = Path(work) / f"{objective}.json"
    cfg_path.write_text(json.dumps(config))
    out = Path(work) / f"run-{objective}-{time.time_ns()}"
    args = [PTM, "pretrain", "--objective", objective, "--config", str(cfg_path), "--tokenizer", str(tokenizer_dir),
            "--train", *map(str, TRAIN), "--output", str(out), "--max-steps", str(STEPS), "--batch-size", str(BATCH),
            "--seq-len", str(SEQ), "--lr", "5e-4", "--log-every", "1", "--save-every", "1000000", "-q"]
    subprocess.run(args, check=True, capture_output=True)
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r and r["step"] > WARM]
    return statistics.median(rates)


def time_torch(model, batches):
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    model.train()
    rates = []
    for i, batch in enumerate(batches[:STEPS]):
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if i >= WARM:
            rates.append(BATCH * SEQ / (time.perf_counter() - start))
    return statistics.median(rates)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    minilm = subprocess.run(["bash", str(ROOT / "tools" / "fetch-minilm.sh")], check=True, capture_output=True,
                            text=True).stdout.strip()
    bert_tok = BertTokenizerFast.from_pretrained(minilm)
    gpt2_dir = ROOT / "tests" / "fixtures" / "tokenizers" / "gpt2"
    gpt2_tok = GPT2TokenizerFast.from_pretrained(gpt2_dir)
    assert gpt2_tok("Hello world")["input_ids"] == [15496, 995]

    bert_blocks = blocks(bert_tok, SEQ - 2, (bert_tok.cls_token_id, bert_tok.sep_token_id))
    collator = DataCollatorForLanguageModeling(bert_tok, mlm_probability=0.15)
    bert_batches = [collator([{"input_ids": b} for b in bert_blocks[i * BATCH:(i + 1) * BATCH]]) for i in range(STEPS)]
    gpt2_blocks = blocks(gpt2_tok, SEQ)
    gpt2_batches = []
    for i in range(STEPS):
        ids = torch.tensor(gpt2_blocks[i * BATCH:(i + 1) * BATCH])
        gpt2_batches.append({"input_ids": ids, "labels": ids})

    results = {k: {"ptm": [], "torch": []} for k in ("bert", "gpt2")}
    with tempfile.TemporaryDirectory() as work:
        gpt2_tok_dir = gpt2_dir
        for r in range(args.rounds):
            cfg = bert_config(bert_tok.vocab_size)
            results["bert"]["ptm"].append(time_ptm("mlm", cfg, minilm, work))
            bert = BertForMaskedLM(BertConfig(**{k: v for k, v in cfg.items() if k != "model_type"}))
            results["bert"]["torch"].append(time_torch(bert, bert_batches))
            cfg = gpt2_config()
            results["gpt2"]["ptm"].append(time_ptm("clm", cfg, gpt2_tok_dir, work))
            gpt2 = GPT2LMHeadModel(GPT2Config(**{k: v for k, v in cfg.items() if k != "model_type"}))
            results["gpt2"]["torch"].append(time_torch(gpt2, gpt2_batches))
            print(f"round {r + 1}: {json.dumps(results)}", flush=True)
        n_bert = sum(p.numel() for p in bert.parameters())
        n_gpt2 = sum(p.numel() for p in gpt2.parameters())

    med = {k: {s: statistics.median(v) for s, v in d.items()} for k, d in results.items()}
    body = [
        "## Training step: small BERT MLM and small GPT-2 CLM, f32, CPU",
        "",
        f"`bench/train.py`, {datetime.date.today()}, {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__} "
        f"(2 threads), transformers {transformers.__version__}; batch {BATCH} x {SEQ} tokens, AdamW, clipping, dropout "
        f"off; tokens/s of steps {WARM + 1}-{STEPS}, medians of {args.rounds} interleaved rounds.",
        "",
        "| workload | PyTorch tokens/s | ptm tokens/s | ptm speed-up |",
        "|---|---:|---:|---:|",
        f"| small BERT MLM ({n_bert / 1e6:.1f}M parameters) | {med['bert']['torch']:.0f} | {med['bert']['ptm']:.0f} | "
        f"{med['bert']['ptm'] / med['bert']['torch']:.2f}× |",
        f"| small GPT-2 CLM ({n_gpt2 / 1e6:.1f}M parameters) | {med['gpt2']['torch']:.0f} | {med['gpt2']['ptm']:.0f} | "
        f"{med['gpt2']['ptm'] / med['gpt2']['torch']:.2f}× |",
    ]
    write_section(Path(args.output), "train", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
