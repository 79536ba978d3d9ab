//! Register-blocked inner products of a few input rows with a few weight rows (f32, bf16 or
//! int8 weights), with the instruction set picked at run time (AVX2 + FMA where the CPU has
//! them, portable Rust otherwise), so one binary is fast on x86-64 machines without
//! `-C target-cpu=native`. Rows are multiples of the vector width (8 floats, 16 int8), which
//! callers ensure by zero padding, so the vector loops have no tails.

/// Row lengths of the int8 kernel, and of the packed formats, are multiples of this.
pub(crate) const LANES: usize = 16;
/// Row lengths of the float kernels are multiples of this.
pub(crate) const FLOAT_LANES: usize = 8;

/// A weight format the float kernel widens to f32.
pub(crate) trait Widen: Copy {
    /// bf16 weights are widened by a shift; f32 ones are loaded as they are.
    const BF16: bool;
    fn widen(self) -> f32;
}

impl Widen for f32 {
    const BF16: bool = false;
    fn widen(self) -> f32 {
        self
    }
}

/// bf16, as its bits.
impl Widen for u16 {
    const BF16: bool = true;
    fn widen(self) -> f32 {
        bf16_to_f32(self)
    }
}

/// Whether the AVX2 + FMA paths run (checked once; std caches the CPUID answer).
#[inline]
fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// f32 with the bits of a bf16 in its upper half: the exact widening.
#[inline(always)]
pub(crate) fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// `x[r] · w[c]` for R rows of f32 inputs and C rows of f32 or bf16 weights, accumulated in f32.
pub(crate) fn dot_float<W: Widen, const R: usize, const C: usize>(
    x: [&[f32]; R],
    w: [&[W]; C],
) -> [[f32; C]; R] {
    let k = x[0].len();
    assert!(
        k.is_multiple_of(FLOAT_LANES)
            && x.iter().all(|r| r.len() == k)
            && w.iter().all(|r| r.len() == k)
    );
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked above); every row holds k values, a
        // multiple of 8, of the type the BF16 flag names.
        let w = w.map(|r| r.as_ptr().cast());
        return unsafe {
            if W::BF16 {
                x86::dot_float::<true, R, C>(x, w, k)
            } else {
                x86::dot_float::<false, R, C>(x, w, k)
            }
        };
    }
    portable_dot_float(x, w)
}

fn portable_dot_float<W: Widen, const R: usize, const C: usize>(
    x: [&[f32]; R],
    w: [&[W]; C],
) -> [[f32; C]; R] {
    x.map(|xr| w.map(|wr| xr.iter().zip(wr).map(|(&a, &b)| a * b.widen()).sum()))
}

/// `x[r] · w[c]` for R rows of int8 activations and C rows of int8 weights, exact in i32
/// (|values| ≤ 127, so rows up to 133,000 long cannot overflow).
pub(crate) fn dot_i8<const R: usize, const C: usize>(
    x: [&[i8]; R],
    w: [&[i8]; C],
) -> [[i32; C]; R] {
    debug_assert!(
        x.iter()
            .chain(&w)
            .all(|r| r.len() == x[0].len() && r.len() % LANES == 0)
    );
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked above); lengths are equal multiples of 16.
        return unsafe { x86::dot_i8(x, w) };
    }
    portable_dot_i8(x, w)
}

fn portable_dot_i8<const R: usize, const C: usize>(x: [&[i8]; R], w: [&[i8]; C]) -> [[i32; C]; R] {
    x.map(|xr| w.map(|wr| xr.iter().zip(wr).map(|(&a, &b)| a as i32 * b as i32).sum()))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    #[target_feature(enable = "avx2")]
    fn hsum_f32(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Eight bf16 values widened to f32 (a zero-extend and a shift: bf16 is f32's top half).
    #[target_feature(enable = "avx2")]
    unsafe fn load_bf16x8(p: *const u16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable values at p.
        let h = unsafe { _mm_loadu_si128(p.cast()) };
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }

    /// Sixteen int8 values sign-extended to i16.
    #[target_feature(enable = "avx2")]
    unsafe fn load_i8x16(p: *const i8) -> __m256i {
        // SAFETY: the caller guarantees 16 readable values at p.
        _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(p.cast()) })
    }

    /// SAFETY: AVX2 and FMA present; every x row and every weight row (bf16 values when BF16,
    /// else f32) holds `k` values, a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_float<const BF16: bool, const R: usize, const C: usize>(
        x: [&[f32]; R],
        w: [*const u8; C],
        k: usize,
    ) -> [[f32; C]; R] {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let (mut xv, mut wv) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); C]);
        let mut p = 0;
        while p < k {
            // SAFETY: p + 8 ≤ k for every row.
            unsafe {
                for r in 0..R {
                    xv[r] = _mm256_loadu_ps(x[r].as_ptr().add(p));
                }
                for c in 0..C {
                    wv[c] = if BF16 {
                        load_bf16x8(w[c].cast::<u16>().add(p))
                    } else {
                        _mm256_loadu_ps(w[c].cast::<f32>().add(p))
                    };
                }
            }
            for r in 0..R {
                for c in 0..C {
                    acc[r][c] = _mm256_fmadd_ps(xv[r], wv[c], acc[r][c]);
                }
            }
            p += 8;
        }
        let mut out = [[0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                out[r][c] = hsum_f32(acc[r][c]);
            }
        }
        out
    }

    /// SAFETY: AVX2 present; every row as long as `x[0]`, a multiple of 16.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_i8<const R: usize, const C: usize>(
        x: [&[i8]; R],
        w: [&[i8]; C],
    ) -> [[i32; C]; R] {
        let mut acc = [[_mm256_setzero_si256(); C]; R];
        let (mut xv, mut wv) = ([_mm256_setzero_si256(); R], [_mm256_setzero_si256(); C]);
        let mut p = 0;
        while p < x[0].len() {
            // SAFETY: p + 16 ≤ len for every row.
            unsafe {
                for r in 0..R {
                    xv[r] = load_i8x16(x[r].as_ptr().add(p));
                }
                for c in 0..C {
                    wv[c] = load_i8x16(w[c].as_ptr().add(p));
                }
            }
            // vpmaddwd: 16 i16 products summed in pairs into 8 i32 lanes.
            for r in 0..R {
                for c in 0..C {
                    acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(xv[r], wv[c]));
                }
            }
            p += 16;
        }
        let mut out = [[0i32; C]; R];
        for r in 0..R {
            for c in 0..C {
                out[r][c] = hsum_i32(acc[r][c]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_dot_is_exact_against_scalar_sums() {
        let k = 48;
        let rows: Vec<Vec<i8>> = (0..6)
            .map(|r| {
                (0..k)
                    .map(|i| ((i * 37 + r * 101) % 255) - 127)
                    .map(|v| v as i8)
                    .collect()
            })
            .collect();
        let (x, w) = (
            [&rows[0][..], &rows[1], &rows[2], &rows[3]],
            [&rows[4][..], &rows[5]],
        );
        let got = dot_i8::<4, 2>(x, w);
        for r in 0..4 {
            for c in 0..2 {
                let want: i32 = rows[r]
                    .iter()
                    .zip(&rows[4 + c])
                    .map(|(&a, &b)| a as i32 * b as i32)
                    .sum();
                assert_eq!(got[r][c], want, "row {r} col {c}");
            }
        }
        assert_eq!(portable_dot_i8(x, w), got);
        // The extremes: 127 · -127 over a long row stays exact.
        let (a, b) = (vec![127i8; 4096], vec![-127i8; 4096]);
        assert_eq!(dot_i8::<1, 1>([&a], [&b])[0][0], -127 * 127 * 4096);
    }

    #[test]
    fn f32_blocked_dot_matches_portable_sums() {
        let k = 40;
        let rows: Vec<Vec<f32>> = (0..6)
            .map(|r| {
                (0..k)
                    .map(|i| ((i * 7 + r * 13) as f32 * 0.21).sin())
                    .collect()
            })
            .collect();
        let (x, w) = (
            [&rows[0][..], &rows[1], &rows[2], &rows[3]],
            [&rows[4][..], &rows[5]],
        );
        let got = dot_float::<f32, 4, 2>(x, w);
        let want = portable_dot_float::<f32, 4, 2>(x, w);
        for r in 0..4 {
            for c in 0..2 {
                assert!(
                    (got[r][c] - want[r][c]).abs() < 1e-5,
                    "row {r} col {c}: {} vs {}",
                    got[r][c],
                    want[r][c]
                );
            }
        }
    }

    #[test]
    fn bf16_dot_matches_widened_f32() {
        let k = 64;
        let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<Vec<u16>> = (0..3)
            .map(|c| {
                (0..k)
                    .map(|i| half::bf16::from_f32(((i + c * 7) as f32 * 0.11).cos()).to_bits())
                    .collect()
            })
            .collect();
        let got = dot_float::<u16, 1, 3>([&x], [&w[0], &w[1], &w[2]])[0];
        let portable = portable_dot_float::<u16, 1, 3>([&x], [&w[0], &w[1], &w[2]])[0];
        for c in 0..3 {
            assert!(
                (got[c] - portable[c]).abs() < 1e-5,
                "col {c}: vector {} vs portable {}",
                got[c],
                portable[c]
            );
            let want: f64 = x
                .iter()
                .zip(&w[c])
                .map(|(&a, &b)| a as f64 * bf16_to_f32(b) as f64)
                .sum();
            assert!(
                (got[c] as f64 - want).abs() < 1e-5,
                "col {c}: {} vs {want}",
                got[c]
            );
        }
    }
}
