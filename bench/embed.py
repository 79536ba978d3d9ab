"""Sentence-embedding speed: `ptm embed` against transformers on PyTorch, same inputs, one run.

Workloads (all-MiniLM-L6-v2, f32, CPU):
  throughput  batches of 32 texts, each exactly 128 tokens          -> sentences/s
  latency     one text at a time, each exactly 16 tokens            -> ms per text
Both systems tokenize, run the encoder, mean-pool and normalise. PyTorch runs with 2 threads
(torch.set_num_threads(2)); ptm uses its default, all cores (2 here). The systems alternate in
rounds so machine noise hits both alike; the medians go into BENCHMARKS.md.

ptm is timed as a process: its start-up (loading the model, measured with an empty input in the
same round) is subtracted, so both columns count the same work.

Run: cargo build --release && tools/fetch-minilm.sh && \
     $(tools/reference/setup-venv.sh) bench/embed.py [--rounds 5]
"""

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PTM = os.environ.get("PTM_BIN", str(ROOT / "target" / "release" / "ptm"))


def paragraphs(corpus, tokenizer, min_tokens, count):
    """Real sentences (public-domain State of the Union addresses) of at least min_tokens tokens."""
    out = []
    for path in sorted(Path(corpus).glob("*.txt")):
        text = " ".join(path.read_text(encoding="utf-8").split())
        words = text.split(" ")
        step = 110 if min_tokens > 16 else 14
        for i in range(0, len(words) - step, step):
            piece = " ".join(words[i : i + step])
            if len(tokenizer(piece)["input_ids"]) >= min_tokens:
                out.append(piece)
            if len(out) == count:
                return out
    raise SystemExit(f"{corpus}: not enough text")


def time_ptm(model, texts, max_length, batch_size, workdir):
    """Seconds of `ptm embed` on texts minus its start-up on an empty input."""
    inp = Path(workdir) / f"in-{max_length}-{batch_size}.txt"
    empty = Path(workdir) / "empty.txt"
    inp.write_text("\n".join(texts) + "\n")
    empty.write_text("")

    def run(path):
        args = [PTM, "embed", "--model", model, "--input", str(path), "--max-length", str(max_length), "--batch-size", str(batch_size)]
        t = time.perf_counter()
        out = subprocess.run(args, check=True, stdout=subprocess.PIPE).stdout
        return time.perf_counter() - t, out.count(b"\n")

    startup, _ = run(empty)
    total, lines = run(inp)
    assert lines == len(texts), (lines, len(texts))
    return total - startup


def time_torch(model, tokenizer, texts, max_length, batch_size):
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            assert batch["input_ids"].shape[1] == max_length
            h = model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            torch.nn.functional.normalize(e, p=2, dim=1)
    return time.perf_counter() - t


def write_section(path, name, body):
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model directory (default: tools/fetch-minilm.sh)")
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "data" / "sotu" / "texts"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=8, help="throughput batches of 32 per round")
    ap.add_argument("--singles", type=int, default=200, help="latency texts per round")
    ap.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    model_dir = args.model or subprocess.run(
        ["bash", str(ROOT / "tools" / "fetch-minilm.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()

    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    long_texts = paragraphs(args.corpus, tokenizer, 128, 32 * args.batches)
    short_texts = paragraphs(args.corpus, tokenizer, 16, args.singles)

    thr = {"ptm": [], "torch": []}
    lat = {"ptm": [], "torch": []}
    with tempfile.TemporaryDirectory() as work:
        time_torch(model, tokenizer, long_texts[:32], 128, 32)  # warm-up
        for r in range(args.rounds):
            thr["ptm"].append(len(long_texts) / time_ptm(model_dir, long_texts, 128, 32, work))
            thr["torch"].append(len(long_texts) / time_torch(model, tokenizer, long_texts, 128, 32))
            lat["ptm"].append(1000 * time_ptm(model_dir, short_texts, 16, 1, work) / len(short_texts))
            lat["torch"].append(1000 * time_torch(model, tokenizer, short_texts, 16, 1) / len(short_texts))
            print(f"round {r + 1}: sentences/s ptm {thr['ptm'][-1]:.1f} torch {thr['torch'][-1]:.1f}; "
                  f"ms/text ptm {lat['ptm'][-1]:.2f} torch {lat['torch'][-1]:.2f}", flush=True)

    med = {k: {s: statistics.median(v) for s, v in d.items()} for k, d in (("thr", thr), ("lat", lat))}
    rows = [
        ("batch 32 × 128 tokens, sentences/s (higher is better)", med["thr"]["torch"], med["thr"]["ptm"],
         med["thr"]["ptm"] / med["thr"]["torch"]),
        ("batch 1 × 16 tokens, ms per text (lower is better)", med["lat"]["torch"], med["lat"]["ptm"],
         med["lat"]["torch"] / med["lat"]["ptm"]),
    ]
    body = [
        "## Sentence embeddings: all-MiniLM-L6-v2, f32, CPU",
        "",
        f"`bench/embed.py`, {datetime.date.today()}, {cpu_name()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__} (2 threads), transformers {transformers.__version__}; "
        f"medians of {args.rounds} interleaved rounds ({len(long_texts)} texts of 128 tokens and "
        f"{len(short_texts)} of 16 per round).",
        "",
        "| workload | PyTorch | ptm | ptm speed-up |",
        "|---|---:|---:|---:|",
    ]
    for name, t, p, ratio in rows:
        body.append(f"| {name} | {t:.2f} | {p:.2f} | {ratio:.2f}× |")
    write_section(Path(args.output), "embed", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
