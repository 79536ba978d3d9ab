"""GEMM throughput, candle (ptm's tensor engine) against PyTorch, on MiniLM's shapes at batch
32 × 128: the bound under every f32 workload. Alternates the two in rounds; prints medians.

Run: $(tools/reference/setup-venv.sh) bench/matmul.py
"""

import json
import statistics
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def torch_gflops():
    x, w = torch.randn(4096, 384), torch.randn(1536, 384)
    q, k = torch.randn(384, 128, 32), torch.randn(384, 128, 32)
    out = {}
    for name, f, flops in [
        ("linear_4096x384x1536", lambda: torch.nn.functional.linear(x, w), 2 * 4096 * 384 * 1536),
        ("attention_scores_384x128x128x32", lambda: q @ k.transpose(1, 2), 2 * 384 * 128 * 128 * 32),
    ]:
        f()
        t = time.perf_counter()
        for _ in range(20):
            f()
        out[name] = flops / ((time.perf_counter() - t) / 20) / 1e9
    return out


def main():
    torch.set_num_threads(2)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ptm", "--example", "matmul"], cwd=ROOT, check=True)
    exe = ROOT / "target" / "release" / "examples" / "matmul"
    rounds = {"candle": [], "torch": []}
    for _ in range(5):
        rounds["candle"].append(json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout))
        rounds["torch"].append(torch_gflops())
    for shape in rounds["torch"][0]:
        c = statistics.median(r[shape] for r in rounds["candle"])
        t = statistics.median(r[shape] for r in rounds["torch"])
        print(f"{shape}: candle {c:.1f} GFLOP/s, PyTorch {t:.1f} GFLOP/s, ratio {c / t:.2f} "
              f"(torch CPU capability: {torch.backends.cpu.get_cpu_capability()})")


if __name__ == "__main__":
    main()
