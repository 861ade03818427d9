//! Speech quality measures: SI-SDR, (extended) short-time objective intelligibility (ESTOI) and wide-band PESQ.
//!
//! PESQ (ITU-T P.862.2, MOS-LQO) comes from the crates.io `pesq` crate, which agrees with the reference PyPI
//! `pesq` package within 1e-3 on the committed fixtures (the bar is 0.05).
//!
//! ESTOI follows Jensen & Taal (2016) as implemented by the reference `pystoi` (extended = True): both signals
//! resampled to 10 kHz (a Kaiser-windowed polyphase filter designed like MATLAB's `resample`), frames whose
//! clean energy is more than 40 dB below the loudest frame removed (256-sample Hann frames, hop 128,
//! overlap-added back), a 512-point STFT of 256-sample Hann frames with hop 128, 15 one-third-octave bands from
//! 150 Hz, and 30-frame segments whose band envelopes are normalised over time and then over bands; the score is
//! the mean correlation. Tested against pystoi on committed fixtures (tests/fixtures/audio/metrics.json).

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

/// Wide-band PESQ (P.862.2 MOS-LQO) of `degraded` against `reference` at `rate` Hz (resampled to 16 kHz if
/// needed); `None` where PESQ is undefined (too short, silent: the crate's error).
pub fn pesq_wb(reference: &[f32], degraded: &[f32], rate: u32) -> Option<f64> {
    let pcm = |x: &[f32]| -> Option<Vec<i16>> {
        let x = if rate == 16_000 { x.to_vec() } else { crate::resample::resample(x, rate, 16_000).ok()? };
        Some(x.iter().map(|&v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16).collect())
    };
    let (r, d) = (pcm(reference)?, pcm(degraded)?);
    pesq::pesq_wb(&r, &d).ok().map(f64::from)
}

const STOI_RATE: u32 = 10_000;
const STOI_FRAME: usize = 256;
const STOI_FFT: usize = 512;
const STOI_BANDS: usize = 15;
const STOI_MIN_FREQ: f64 = 150.0;
const STOI_SEGMENT: usize = 30;
const STOI_DYN_RANGE: f64 = 40.0;
/// numpy's float64 machine epsilon, which pystoi adds before logarithms.
const EPS: f64 = f64::EPSILON;

/// Extended STOI (Jensen & Taal 2016) of `processed` against `clean`, both at `rate` Hz, as pystoi computes it
/// (`stoi(clean, processed, rate, extended=True)`). Lengths must match. Signals too short for one 30-frame segment
/// after silence removal give 1e-5, as in pystoi.
pub fn estoi(clean: &[f32], processed: &[f32], rate: u32) -> f64 {
    assert_eq!(clean.len(), processed.len(), "estoi: signals of different lengths");
    let to64 = |v: &[f32]| v.iter().map(|&s| f64::from(s)).collect::<Vec<f64>>();
    let (mut x, mut y) = (to64(clean), to64(processed));
    if rate != STOI_RATE {
        x = resample_matlab(&x, STOI_RATE, rate);
        y = resample_matlab(&y, STOI_RATE, rate);
    }
    let (x, y) = remove_silent_frames(&x, &y, STOI_DYN_RANGE, STOI_FRAME, STOI_FRAME / 2);
    let obm = third_octave_bands();
    let xb = band_envelopes(&x, &obm);
    let yb = band_envelopes(&y, &obm);
    let frames = xb.first().map_or(0, Vec::len);
    if frames < STOI_SEGMENT {
        return 1e-5;
    }
    let n = STOI_SEGMENT;
    let mut total = 0.0;
    let segments = frames - n + 1;
    for m in n..=frames {
        let xs = normalise_segment(&xb, m - n, n);
        let ys = normalise_segment(&yb, m - n, n);
        let dot: f64 = xs.iter().zip(&ys).map(|(a, b)| a * b).sum();
        total += dot / n as f64;
    }
    total / segments as f64
}

/// A segment `[bands × n]` starting at frame `start`, each band normalised to zero mean and unit norm over time,
/// then each frame normalised to zero mean and unit norm over bands (row-major, band-major).
fn normalise_segment(bands: &[Vec<f64>], start: usize, n: usize) -> Vec<f64> {
    let nb = bands.len();
    let mut s = vec![0.0; nb * n];
    for (j, band) in bands.iter().enumerate() {
        let row = &band[start..start + n];
        let mean = row.iter().sum::<f64>() / n as f64;
        let norm = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>().sqrt();
        for k in 0..n {
            s[j * n + k] = (row[k] - mean) / norm.max(EPS);
        }
    }
    for k in 0..n {
        let mean = (0..nb).map(|j| s[j * n + k]).sum::<f64>() / nb as f64;
        let norm = (0..nb).map(|j| (s[j * n + k] - mean).powi(2)).sum::<f64>().sqrt();
        for j in 0..nb {
            s[j * n + k] = (s[j * n + k] - mean) / norm.max(EPS);
        }
    }
    s
}

/// MATLAB's `hanning(n)` (no zero end points): `0.5 − 0.5 cos(2π(k+1)/(n+1))`.
fn hanning(n: usize) -> Vec<f64> {
    (0..n).map(|k| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * (k + 1) as f64 / (n + 1) as f64).cos()).collect()
}

/// Frame starts `0, hop, …` strictly below `len − frame` (pystoi's `range(0, len − frame, hop)`).
fn frame_starts(len: usize, frame: usize, hop: usize) -> impl Iterator<Item = usize> {
    (0..len.saturating_sub(frame)).step_by(hop)
}

/// Drops the frames whose clean energy is more than `range` dB below the loudest one and overlap-adds the rest.
fn remove_silent_frames(x: &[f64], y: &[f64], range: f64, frame: usize, hop: usize) -> (Vec<f64>, Vec<f64>) {
    let w = hanning(frame);
    let windowed = |s: &[f64], i: usize| -> Vec<f64> { (0..frame).map(|k| w[k] * s[i + k]).collect() };
    let starts: Vec<usize> = frame_starts(x.len(), frame, hop).collect();
    let energies: Vec<f64> = starts
        .iter()
        .map(|&i| 20.0 * (windowed(x, i).iter().map(|v| v * v).sum::<f64>().sqrt() + EPS).log10())
        .collect();
    let max = energies.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let kept: Vec<usize> =
        starts.iter().zip(&energies).filter(|&(_, &e)| max - range - e < 0.0).map(|(&i, _)| i).collect();
    let len = if kept.is_empty() { 0 } else { (kept.len() - 1) * hop + frame };
    let (mut xo, mut yo) = (vec![0.0; len], vec![0.0; len]);
    for (k, &i) in kept.iter().enumerate() {
        let (xf, yf) = (windowed(x, i), windowed(y, i));
        for j in 0..frame {
            xo[k * hop + j] += xf[j];
            yo[k * hop + j] += yf[j];
        }
    }
    (xo, yo)
}

/// The one-third-octave band matrix: band j sums FFT bins `[lo_j, hi_j)`, the bins nearest to
/// `150·2^((2j∓1)/6)` Hz.
fn third_octave_bands() -> Vec<(usize, usize)> {
    let bins = STOI_FFT / 2 + 1;
    let freq = |b: usize| b as f64 * f64::from(STOI_RATE) / STOI_FFT as f64;
    let nearest =
        |f: f64| (0..bins).min_by(|&a, &b| (freq(a) - f).powi(2).total_cmp(&(freq(b) - f).powi(2))).unwrap_or(0);
    (0..STOI_BANDS)
        .map(|j| {
            let k = j as f64;
            let lo = STOI_MIN_FREQ * 2f64.powf((2.0 * k - 1.0) / 6.0);
            let hi = STOI_MIN_FREQ * 2f64.powf((2.0 * k + 1.0) / 6.0);
            (nearest(lo), nearest(hi))
        })
        .collect()
}

/// Band envelopes `[bands][frames]`: √(Σ_bins |X|²) of a 512-point FFT of 256-sample Hann frames, hop 128.
fn band_envelopes(x: &[f64], bands: &[(usize, usize)]) -> Vec<Vec<f64>> {
    use realfft::RealFftPlanner;
    let w = hanning(STOI_FRAME);
    let fft = RealFftPlanner::<f64>::new().plan_fft_forward(STOI_FFT);
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut out = vec![Vec::new(); bands.len()];
    for i in frame_starts(x.len(), STOI_FRAME, STOI_FRAME / 2) {
        input.iter_mut().for_each(|v| *v = 0.0);
        for k in 0..STOI_FRAME {
            input[k] = w[k] * x[i + k];
        }
        // The buffers come from this plan, so their lengths are right.
        let _ = fft.process(&mut input, &mut spectrum);
        for (j, &(lo, hi)) in bands.iter().enumerate() {
            out[j].push(spectrum[lo..hi].iter().map(|c| c.norm_sqr()).sum::<f64>().sqrt());
        }
    }
    out
}

/// Resamples by `up/down` (reduced by their gcd) the way pystoi's `resample_oct` does: MATLAB's Kaiser-windowed
/// sinc design (60 dB rejection, roll-off a tenth of the cut-off), normalised to unit sum, then scipy's
/// `resample_poly` (gain `up`, delay-compensated, output length ⌈len·up/down⌉).
pub fn resample_matlab(x: &[f64], up: u32, down: u32) -> Vec<f64> {
    let g = gcd(up, down);
    let (p, q) = ((up / g) as usize, (down / g) as usize);
    let h = matlab_filter(p, q);
    let half = (h.len() - 1) / 2;
    let n_out = (x.len() * p).div_ceil(q);
    let pre_pad = q - half % q;
    let pre_remove = (half + pre_pad) / q;
    // Output k of upfirdn on [zeros(pre_pad), h]: Σ_j h'[j]·xu[k·q − j], xu the zero-stuffed input.
    let mut out = Vec::with_capacity(n_out);
    for k in pre_remove..pre_remove + n_out {
        let pos = k * q; // index into the upsampled signal, relative to the padded filter's start
        let mut acc = 0.0;
        // Non-zero xu at multiples of p: i = m·p with j = pos − i inside the padded filter.
        let j_max = pos.min(pre_pad + h.len() - 1);
        let first_m = pos.saturating_sub(pre_pad + h.len() - 1).div_ceil(p);
        let mut m = first_m;
        while m * p <= pos && m < x.len() {
            let j = pos - m * p;
            if j >= pre_pad && j <= j_max {
                acc += h[j - pre_pad] * x[m];
            }
            m += 1;
        }
        out.push(acc * p as f64);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// MATLAB `resample`'s anti-aliasing filter for p/q, normalised to unit sum.
fn matlab_filter(p: usize, q: usize) -> Vec<f64> {
    let cutoff = 1.0 / (2 * p.max(q)) as f64;
    let roll_off = cutoff / 10.0;
    let rejection_db = 60.0; // −20·log10(1e-3)
    let l = ((rejection_db - 8.0) / (28.714 * roll_off)).ceil() as i64;
    let beta = if rejection_db > 50.0 {
        0.1102 * (rejection_db - 8.7)
    } else if rejection_db >= 21.0 {
        0.5842 * (rejection_db - 21.0f64).powf(0.4) + 0.07886 * (rejection_db - 21.0)
    } else {
        0.0
    };
    let m = 2 * l + 1;
    let sinc = |x: f64| if x == 0.0 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) };
    let h: Vec<f64> = (0..m)
        .map(|n| {
            let t = (n - l) as f64;
            let ideal = 2.0 * p as f64 * cutoff * sinc(2.0 * cutoff * t);
            let r = 2.0 * n as f64 / (m - 1) as f64 - 1.0;
            let kaiser = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / bessel_i0(beta);
            kaiser * ideal
        })
        .collect();
    let sum: f64 = h.iter().sum();
    h.into_iter().map(|v| v / sum).collect()
}

/// The modified Bessel function I0 by its power series (converges fast for the β ≤ 10 used here).
fn bessel_i0(x: f64) -> f64 {
    let (mut term, mut sum, q) = (1.0f64, 1.0f64, x * x / 4.0);
    for k in 1..200 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
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

    /// Reference values from PyPI pystoi 0.4.1 (tools/make_metric_fixtures.py), within 1e-3.
    #[test]
    fn estoi_matches_pystoi_on_the_fixtures() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/audio/metrics");
        let text = std::fs::read_to_string(dir.join("metrics.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let read = |f: &str| crate::wav::read_wav(&dir.join(f)).unwrap();
        let cases = v["cases"].as_array().unwrap();
        assert!(cases.len() >= 5);
        for case in cases {
            let clean = read(case["clean"].as_str().unwrap());
            let degraded = read(case["degraded"].as_str().unwrap());
            assert_eq!(clean.sample_rate as u64, case["rate"].as_u64().unwrap());
            let ours = estoi(&clean.channels[0], &degraded.channels[0], clean.sample_rate);
            let theirs = case["estoi"].as_f64().unwrap();
            assert!((ours - theirs).abs() < 1e-3, "{}: ESTOI {ours} vs pystoi {theirs}", case["degraded"]);
            if let Some(want) = case["pesq_wb"].as_f64() {
                let got = pesq_wb(&clean.channels[0], &degraded.channels[0], clean.sample_rate).unwrap();
                assert!((got - want).abs() < 0.05, "{}: PESQ {got} vs PyPI pesq {want}", case["degraded"]);
                assert!(
                    (got - want).abs() < 1e-3,
                    "{}: PESQ {got} vs PyPI pesq {want} (tighter bound)",
                    case["degraded"]
                );
            }
        }
    }

    #[test]
    fn estoi_of_a_signal_with_itself_is_one_and_short_signals_give_the_floor() {
        let s: Vec<f32> = (0..16000).map(|i| (i as f32 * 0.05).sin() * (i as f32 * 0.0013).sin()).collect();
        assert!((estoi(&s, &s, 16000) - 1.0).abs() < 1e-9);
        assert_eq!(estoi(&s[..2000], &s[..2000], 16000), 1e-5);
    }

    #[test]
    fn matlab_resampler_keeps_a_low_tone() {
        // A 200 Hz tone through 16 kHz → 10 kHz stays a 200 Hz tone (interior samples, unit gain).
        let x: Vec<f64> = (0..16000).map(|i| (2.0 * std::f64::consts::PI * 200.0 * i as f64 / 16000.0).sin()).collect();
        let y = resample_matlab(&x, 10_000, 16_000);
        assert_eq!(y.len(), 10_000);
        for k in 1000..9000 {
            let want = (2.0 * std::f64::consts::PI * 200.0 * k as f64 / 10000.0).sin();
            assert!((y[k] - want).abs() < 2e-3, "sample {k}: {} vs {want}", y[k]);
        }
    }
}
