//! Signal-level quality measures.

/// Scale-invariant signal-to-distortion ratio in dB of `estimate` against `reference` (Le Roux et al. 2019):
/// `10·log10(‖αs‖² / ‖αs − ŝ‖²)` with `α = ⟨ŝ, s⟩/‖s‖²`. Lengths must match; infinite for a perfect match.
pub fn si_sdr(reference: &[f32], estimate: &[f32]) -> f64 {
    assert_eq!(reference.len(), estimate.len(), "si_sdr: signals of different lengths");
    let dot: f64 = reference.iter().zip(estimate).map(|(&s, &e)| f64::from(s) * f64::from(e)).sum();
    let energy: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
    if energy == 0.0 {
        return f64::NEG_INFINITY;
    }
    let alpha = dot / energy;
    let (mut target, mut noise) = (0.0f64, 0.0f64);
    for (&s, &e) in reference.iter().zip(estimate) {
        let t = alpha * f64::from(s);
        target += t * t;
        noise += (t - f64::from(e)).powi(2);
    }
    10.0 * (target / noise).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_sdr_known_values() {
        let s: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.1).sin()).collect();
        let scaled: Vec<f32> = s.iter().map(|v| 3.0 * v).collect();
        assert!(si_sdr(&s, &scaled) > 120.0, "scale invariance: only f32 rounding remains");
        // Adding a component orthogonal to s with a tenth of its energy gives exactly 10 dB.
        let c: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.37).cos()).collect();
        let s64: Vec<f64> = s.iter().map(|&v| f64::from(v)).collect();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let p = dot(&c, &s64) / dot(&s64, &s64);
        let n: Vec<f64> = c.iter().zip(&s64).map(|(c, s)| c - p * s).collect();
        let k = (dot(&s64, &s64) / 10.0 / dot(&n, &n)).sqrt();
        let e: Vec<f32> = s64.iter().zip(&n).map(|(a, b)| (a + k * b) as f32).collect();
        assert!((si_sdr(&s, &e) - 10.0).abs() < 1e-3, "{}", si_sdr(&s, &e));
    }
}
