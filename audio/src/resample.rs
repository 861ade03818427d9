//! Sample-rate conversion between the file's rate and the model's rate.
//!
//! Uses rubato's synchronous FFT resampler: the ratio is a fixed rational number, so it is exact (no drift), the
//! anti-aliasing filter is a steep windowed (Blackman-Harris) brick wall, and `process_all` trims the filter
//! delay so the output is time-aligned with the input. The output has exactly `ceil(len · to / from)` samples.

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Resampler};

use crate::{Error, Result};

/// Resamples one channel from `from` Hz to `to` Hz; returns a copy when the rates are equal.
pub fn resample(signal: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    for rate in [from, to] {
        crate::wav::check_sample_rate(rate)
            .map_err(|why| Error::invalid("sample rate", format!("cannot resample {from} Hz to {to} Hz: {why}")))?;
    }
    if from == to || signal.is_empty() {
        return Ok(signal.to_vec());
    }
    let input: Vec<f64> = signal.iter().map(|&s| f64::from(s)).collect();
    // FFT sizes are multiples of rate/gcd; an odd input FFT size would delay the output by half an input
    // sample, so the number of blocks is even (and the block at least ~1024 input samples).
    let gcd = gcd(from as usize, to as usize);
    let min_in = from as usize / gcd;
    let blocks = 1024usize.div_ceil(min_in).max(2).next_multiple_of(2);
    let mut resampler = Fft::<f64>::new_custom(
        from as usize,
        to as usize,
        blocks * min_in,
        1,
        1,
        rubato::WindowFunction::BlackmanHarris2,
        FixedSync::Both,
    )
    .map_err(|e| Error::invalid("sample rate", format!("{from} Hz to {to} Hz: {e}")))?;
    let adapter =
        SequentialSlice::new(&input, 1, input.len()).map_err(|e| Error::invalid("resampler input", e.to_string()))?;
    let out = resampler
        .process_all(&adapter, input.len(), None)
        .map_err(|e| Error::invalid("resampler", format!("{from} Hz to {to} Hz: {e}")))?;
    Ok(out.take_data().into_iter().map(|s| s as f32).collect())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Number of samples [`resample`] returns for `len` input samples (saturating; a rate of 0 gives 0, since
/// [`resample`] refuses it).
pub fn resampled_len(len: usize, from: u32, to: u32) -> usize {
    if from == to {
        len
    } else if from == 0 {
        0
    } else {
        usize::try_from((len as u128 * u128::from(to)).div_ceil(u128::from(from))).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, rate: u32, f: f64) -> Vec<f32> {
        (0..n).map(|i| (0.5 * (2.0 * std::f64::consts::PI * f * i as f64 / f64::from(rate)).sin()) as f32).collect()
    }

    fn max_err(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max)
    }

    #[test]
    fn a_tone_keeps_its_frequency_phase_and_length() {
        for (from, to) in
            [(48000, 16000), (44100, 16000), (16000, 48000), (22050, 16000), (8000, 16000), (16001, 16000)]
        {
            let n = from as usize; // one second
            let out = resample(&tone(n, from, 1000.0), from, to).unwrap();
            assert_eq!(out.len(), resampled_len(n, from, to), "{from}->{to}");
            let expected = tone(out.len(), to, 1000.0);
            // Away from the two ends (where the filter sees the zero-padded outside), the tone is exact.
            let edge = to as usize / 50;
            let err = max_err(&out[edge..out.len() - edge], &expected[edge..out.len() - edge]);
            assert!(err < 1e-3, "{from}->{to}: error {err}");
        }
    }

    #[test]
    fn content_above_the_new_nyquist_is_removed() {
        let out = resample(&tone(48000, 48000, 12000.0), 48000, 16000).unwrap();
        let rms =
            (out[400..out.len() - 400].iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / out.len() as f64).sqrt();
        assert!(rms < 1e-3, "a 12 kHz tone leaks into 16 kHz audio: rms {rms}");
    }

    #[test]
    fn equal_rates_are_a_copy_and_a_round_trip_is_close() {
        let x = tone(16000, 16000, 440.0);
        assert_eq!(resample(&x, 16000, 16000).unwrap(), x);
        let up = resample(&x, 16000, 44100).unwrap();
        let back = resample(&up, 44100, 16000).unwrap();
        assert_eq!(back.len(), x.len());
        assert!(max_err(&back[200..15800], &x[200..15800]) < 1e-3);
        assert!(resample(&x, 0, 16000).is_err());
        // Issue 23: a 1 Hz header asked for 16 000× its length; rates outside 1 kHz–768 kHz are refused.
        assert!(resample(&x, 1, 16000).unwrap_err().to_string().contains("1000"));
        assert_eq!(resampled_len(100, 0, 16000), 0);
    }
}
