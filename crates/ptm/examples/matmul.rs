//! GEMM throughput of the tensor engine on the shapes of all-MiniLM-L6-v2 at batch 32 × 128,
//! for bench/matmul.py. Prints one JSON object: GFLOP/s per shape.

use candle_core::{Device, Tensor};

fn gflops(lhs: &Tensor, rhs: &Tensor, flops: f64) -> f64 {
    let _ = lhs.matmul(rhs).unwrap();
    let n = 20;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let _ = lhs.matmul(rhs).unwrap();
    }
    flops / (t.elapsed().as_secs_f64() / n as f64) / 1e9
}

fn main() {
    let d = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (4096, 384), &d).unwrap();
    let w = Tensor::randn(0f32, 1.0, (1536, 384), &d).unwrap(); // (out, in) as Linear keeps it
    let q = Tensor::randn(0f32, 1.0, (384, 128, 32), &d).unwrap(); // (batch · heads, seq, head_dim)
    let k = Tensor::randn(0f32, 1.0, (384, 128, 32), &d).unwrap();
    let linear = gflops(&x, &w.t().unwrap(), 2.0 * 4096.0 * 384.0 * 1536.0);
    let scores = gflops(&q, &k.t().unwrap(), 2.0 * 384.0 * 128.0 * 128.0 * 32.0);
    println!(
        "{{\"linear_4096x384x1536\": {linear:.1}, \"attention_scores_384x128x128x32\": {scores:.1}}}"
    );
}
