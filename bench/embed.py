"""Sentence-embedding speed: `ptm embed` against transformers on PyTorch and against ONNX
Runtime, same inputs, one run.

Workloads (all-MiniLM-L6-v2, CPU; PyTorch and ONNX Runtime in f32, ptm in f32, bf16 and int8):
  throughput  batches of 32 texts, each exactly 128 tokens          -> sentences/s
  latency     one text at a time, each exactly 16 tokens            -> ms per text
  mixed       512 real sentences of mixed length, batches of 32     -> sentences/s
              (every system sorts them by length first, as sentence-transformers' encode does)
All systems tokenize, run the encoder, mean-pool and normalise. PyTorch runs with 2 threads
(torch.set_num_threads(2)), ONNX Runtime with 2 intra-op threads on the same checkpoint exported
by torch.onnx (its dynamo exporter) and passed through onnxruntime.transformers' optimizer;
ptm uses its default, all cores (2 here). The systems alternate in rounds so machine noise hits
all alike; the medians go into BENCHMARKS.md.

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


def time_ptm(model, texts, max_length, batch_size, workdir, dtype="f32"):
    """Seconds of `ptm embed --dtype DTYPE` on texts minus its start-up on an empty input."""
    inp = Path(workdir) / f"in-{max_length}-{batch_size}.txt"
    empty = Path(workdir) / "empty.txt"
    inp.write_text("\n".join(texts) + "\n")
    empty.write_text("")

    def run(path):
        args = [PTM, "embed", "--model", model, "--input", str(path), "--max-length", str(max_length), "--batch-size", str(batch_size), "--dtype", dtype]
        t = time.perf_counter()
        out = subprocess.run(args, check=True, stdout=subprocess.PIPE).stdout
        return time.perf_counter() - t, out.count(b"\n")

    startup, _ = run(empty)
    total, lines = run(inp)
    assert lines == len(texts), (lines, len(texts))
    return total - startup


def by_length(tokenizer, texts):
    return sorted(texts, key=lambda t: -len(tokenizer(t)["input_ids"]))


def time_torch(model, tokenizer, texts, max_length, batch_size, exact=True):
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            assert not exact or batch["input_ids"].shape[1] == max_length
            h = model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            torch.nn.functional.normalize(e, p=2, dim=1)
    return time.perf_counter() - t


class Encoder(torch.nn.Module):
    """BertModel with positional inputs and one output, for the ONNX export."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state


def ort_session(model, tokenizer, config, workdir):
    """ONNX Runtime on the exported, optimised model; returns the session and the fusions made."""
    import onnxruntime as ort
    from onnxruntime.transformers import optimizer

    enc = tokenizer(["a first sentence", "and a second, longer sentence"], padding=True, return_tensors="pt")
    raw, opt = Path(workdir) / "model.onnx", Path(workdir) / "model.opt.onnx"
    names = ("input_ids", "attention_mask", "token_type_ids")
    torch.onnx.export(Encoder(model), tuple(enc[n] for n in names), str(raw), input_names=list(names),
                      output_names=["last_hidden_state"], dynamic_shapes=({0: "batch", 1: "seq"},) * 3, dynamo=True)
    optimized = optimizer.optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                                         hidden_size=config.hidden_size)
    optimized.save_model_to_file(str(opt))
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    session = ort.InferenceSession(str(opt), so, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        want = model(**enc).last_hidden_state.numpy()
    got = session.run(None, {n: enc[n].numpy() for n in names})[0]
    assert abs(got - want).max() < 1e-3, f"ONNX export differs from PyTorch by {abs(got - want).max()}"
    return session, fused, ort.__version__


def time_ort(session, tokenizer, texts, max_length, batch_size):
    t = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="np")
        h = session.run(None, {n: batch[n] for n in ("input_ids", "attention_mask", "token_type_ids")})[0]
        m = batch["attention_mask"][..., None].astype(h.dtype)
        e = (h * m).sum(1) / m.sum(1).clip(min=1e-9)
        e / (e * e).sum(-1, keepdims=True) ** 0.5
    return time.perf_counter() - t


def sentences(corpus, count):
    """Real sentences of mixed length, in corpus order."""
    out = []
    for path in sorted(Path(corpus).glob("*.txt")):
        text = " ".join(path.read_text(encoding="utf-8").split())
        out += [s.strip() + "." for s in text.split(". ") if len(s.split()) >= 3]
        if len(out) >= count:
            return out[:count]
    raise SystemExit(f"{corpus}: not enough text")


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
    mixed = by_length(tokenizer, sentences(args.corpus, 512))
    systems = ("torch", "ort", "ptm", "ptm-bf16", "ptm-int8")
    dtypes = {"ptm": "f32", "ptm-bf16": "bf16", "ptm-int8": "int8"}
    thr, lat, mix = ({s: [] for s in systems} for _ in range(3))
    with tempfile.TemporaryDirectory() as work:
        session, fused, ort_version = ort_session(model, tokenizer, model.config, work)
        time_torch(model, tokenizer, long_texts[:32], 128, 32)  # warm-up
        time_ort(session, tokenizer, long_texts[:32], 128, 32)
        for r in range(args.rounds):
            for s, d in dtypes.items():
                thr[s].append(len(long_texts) / time_ptm(model_dir, long_texts, 128, 32, work, d))
            thr["torch"].append(len(long_texts) / time_torch(model, tokenizer, long_texts, 128, 32))
            thr["ort"].append(len(long_texts) / time_ort(session, tokenizer, long_texts, 128, 32))
            for s, d in dtypes.items():
                lat[s].append(1000 * time_ptm(model_dir, short_texts, 16, 1, work, d) / len(short_texts))
            lat["torch"].append(1000 * time_torch(model, tokenizer, short_texts, 16, 1) / len(short_texts))
            lat["ort"].append(1000 * time_ort(session, tokenizer, short_texts, 16, 1) / len(short_texts))
            for s, d in dtypes.items():
                mix[s].append(len(mixed) / time_ptm(model_dir, mixed, 256, 32, work, d))
            mix["torch"].append(len(mixed) / time_torch(model, tokenizer, mixed, 256, 32, exact=False))
            mix["ort"].append(len(mixed) / time_ort(session, tokenizer, mixed, 256, 32))
            print(f"round {r + 1}: " + "; ".join(
                f"{name} " + " ".join(f"{s} {d[s][-1]:.1f}" for s in systems)
                for name, d in (("32x128 sent/s", thr), ("1x16 ms", lat), ("mixed sent/s", mix))), flush=True)

    med = {k: {s: statistics.median(v) for s, v in d.items()} for k, d in (("thr", thr), ("lat", lat), ("mix", mix))}
    rows = [
        ("batch 32 × 128 tokens, sentences/s (higher is better)", med["thr"], False),
        ("batch 1 × 16 tokens, ms per text (lower is better)", med["lat"], True),
        (f"{len(mixed)} real sentences of mixed length, batches of 32, sentences/s", med["mix"], False),
    ]
    body = [
        "## Sentence embeddings: all-MiniLM-L6-v2, CPU",
        "",
        f"`bench/embed.py`, {datetime.date.today()}, {cpu_name()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__} (2 threads), transformers {transformers.__version__}, onnxruntime "
        f"{ort_version} (2 threads; optimizer fusions: {', '.join(f'{k} {v}' for k, v in fused.items())}); "
        f"medians of {args.rounds} interleaved rounds ({len(long_texts)} texts of 128 tokens, "
        f"{len(short_texts)} of 16 and {len(mixed)} sentences per round). PyTorch and ONNX Runtime "
        "run f32; ptm runs f32, bf16 and int8 (`--dtype`).",
        "",
        "| workload | PyTorch | ONNX Runtime | ptm f32 | ptm bf16 | ptm int8 | ptm f32 / PyTorch | "
        "ptm f32 / ORT | ptm bf16 / ORT | ptm int8 / ORT |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m, lower in rows:
        speed = (lambda a, b: b / a) if lower else (lambda a, b: a / b)
        ratios = [speed(m["ptm"], m["torch"])] + [speed(m[s], m["ort"]) for s in dtypes]
        body.append(f"| {name} | " + " | ".join(f"{m[s]:.2f}" for s in systems) + " | "
                    + " | ".join(f"{r:.2f}×" for r in ratios) + " |")
    write_section(Path(args.output), "embed", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
