//! Percentiles and rates.

/// The `p`-th percentile (0..=100) of `values` by linear interpolation
/// between the closest ranks (numpy's default): the value at position
/// `p / 100 * (n - 1)` of the sorted values. `None` for no values. NaNs are
/// ignored.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    percentile_sorted(&v, p)
}

/// [`percentile`] of values already sorted ascending (without NaNs).
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let pos = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Several percentiles at once, as `{"p10": x, ...}` (null when empty).
pub fn percentiles(values: &[f64], ps: &[u32]) -> serde_json::Map<String, serde_json::Value> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    ps.iter()
        .map(|&p| {
            let x = percentile_sorted(&v, p as f64).map(round4);
            (format!("p{p}"), serde_json::json!(x))
        })
        .collect()
}

/// `part / whole`, `None` when `whole` is 0.
pub fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| round4(part as f64 / whole as f64))
}

/// Rounded to 4 decimals, for JSON.
pub fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [15.0, 20.0, 35.0, 40.0, 50.0];
        assert_eq!(percentile(&v, 0.0), Some(15.0));
        assert_eq!(percentile(&v, 100.0), Some(50.0));
        assert_eq!(percentile(&v, 50.0), Some(35.0));
        // position 0.4 * 4 = 1.6: 20 + 0.6 * 15
        assert!((percentile(&v, 40.0).unwrap() - 29.0).abs() < 1e-9);
        // Unsorted input and NaNs.
        let u = [50.0, f64::NAN, 15.0, 40.0, 20.0, 35.0];
        assert_eq!(percentile(&u, 50.0), Some(35.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 90.0), Some(7.0));
        // 1..=100: p90 is at position 89.1.
        let h: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&h, 90.0).unwrap() - 90.1).abs() < 1e-9);
        assert!((percentile(&h, 99.0).unwrap() - 99.01).abs() < 1e-9);
        assert!((percentile(&h, 10.0).unwrap() - 10.9).abs() < 1e-9);
    }

    #[test]
    fn percentile_maps_and_rates() {
        let m = percentiles(&[1.0, 2.0, 3.0], &[10, 50, 90]);
        assert_eq!(m["p50"], 2.0);
        assert_eq!(m["p10"], 1.2);
        assert_eq!(m["p90"], 2.8);
        let empty = percentiles(&[], &[50]);
        assert!(empty["p50"].is_null());
        assert_eq!(rate(1, 3), Some(0.3333));
        assert_eq!(rate(0, 0), None);
    }
}
