//! The dot product of two vectors, and the graph's distance built on it.
//!
//! Every vector kefu indexes is L2-normalised (the embedder's invariant), so
//! cosine similarity is the dot product and the cosine distance is `1 - dot`.
//! anndists' `DistCosine` recomputes both norms and accumulates in f64 one
//! element at a time on every call; at 384 dimensions that was about two
//! thirds of the graph's build and search time. This one is one pass with
//! eight-lane accumulators (AVX2 + FMA when the CPU has them, detected at run
//! time; otherwise plain code the compiler vectorises with SSE).

use hnsw_rs::prelude::Distance;

/// Cosine distance `1 - a·b` for unit vectors.
///
/// Named like anndists' `DistCosine` on purpose: hnsw_rs checks the last
/// segment of the distance's type name when it loads a dumped graph, and the
/// two agree on every unit vector, so graphs saved before this type existed
/// load unchanged (their neighbour lists are the same either way).
#[derive(Debug, Default, Clone, Copy)]
pub struct DistCosine;

impl Distance<f32> for DistCosine {
    #[inline]
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        // f32 rounding can put two equal unit vectors a hair above 1.
        (1.0 - dot(va, vb)).max(0.0)
    }
}

/// Dot product (cosine for unit vectors).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// Eight independent accumulators: no loop-carried dependency on one sum,
/// which lets the compiler keep them in vector registers.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Four accumulators hide the FMA latency.
    let mut s0 = _mm256_setzero_ps();
    let mut s1 = _mm256_setzero_ps();
    let mut s2 = _mm256_setzero_ps();
    let mut s3 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 32 <= n {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
        s1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i + 8)),
            _mm256_loadu_ps(pb.add(i + 8)),
            s1,
        );
        s2 = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i + 16)),
            _mm256_loadu_ps(pb.add(i + 16)),
            s2,
        );
        s3 = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i + 24)),
            _mm256_loadu_ps(pb.add(i + 24)),
            s3,
        );
        i += 32;
    }
    while i + 8 <= n {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    let lo = _mm256_castps256_ps128(s);
    let hi = _mm256_extractf128_ps(s, 1);
    let q = _mm_add_ps(lo, hi);
    let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    let mut sum = _mm_cvtss_f32(q);
    while i < n {
        sum += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    #[test]
    fn agrees_with_a_naive_sum_at_every_length() {
        let mut x = 7u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 100, 384, 385] {
            let a: Vec<f32> = (0..n).map(|_| next()).collect();
            let b: Vec<f32> = (0..n).map(|_| next()).collect();
            let want = naive(&a, &b);
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-4, "n = {n}");
            assert!((dot_portable(&a, &b) as f64 - want).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn distance_is_one_minus_cosine_for_unit_vectors() {
        let a = [0.6f32, 0.8, 0.0];
        let b = [0.0f32, 1.0, 0.0];
        assert!((DistCosine.eval(&a, &b) - 0.2).abs() < 1e-6);
        assert_eq!(DistCosine.eval(&a, &a), 0.0);
        let anndists = hnsw_rs::prelude::DistCosine;
        assert!((anndists.eval(&a, &b) - DistCosine.eval(&a, &b)).abs() < 1e-6);
    }
}
