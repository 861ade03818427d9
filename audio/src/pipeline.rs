//! The enhancement pipeline: WAV → model rate → normalise → STFT → transform → (chunks) → sampler → inverse.
//!
//! The sampler is a [`SpectrogramSampler`]: it receives the transformed, frame-padded noisy spectrogram `y`
//! (`[1, 2, F, T]` on the model's device) and returns the clean estimate of the same shape. The solvers
//! themselves live in diffuse-core; this module only prepares their input and turns their output into audio.
//!
//! Long inputs are cut into overlapping chunks of frames (default 256 frames with 32 frames of overlap, about
//! 2 s and 0.26 s at 16 kHz) that are sampled independently and cross-faded linearly in the overlap, so the
//! network's memory is bounded by the chunk size whatever the file length. The STFT of the whole file is
//! computed once, so chunking changes nothing but the network's context.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use tch::{Kind, Tensor};

use crate::config::ModelConfig;
use crate::model::ScoreModel;
use crate::resample::resample;
use crate::stft::{Spectrogram, Stft};
use crate::transform::{crop_frames, norm_factor, pad_frames};
use crate::wav::{Audio, SampleFormat, WriteReport, read_wav, write_wav_new};
use crate::{Error, Result};

/// The random source of one sampler call: frame `t` of a chunk starting at `first_frame` draws from the stream of
/// its absolute frame index, so a chunk sees exactly the noise the whole file would see at those frames (chunking
/// changes only the network's context, not the random draws).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameNoise {
    /// Seed of the file and channel.
    pub seed: u64,
    /// Absolute index of the chunk's first frame.
    pub first_frame: usize,
}

impl FrameNoise {
    /// Standard normal noise `[1, 2, bins, frames]` (draw number `draw` of every frame's stream), float32.
    pub fn normal(&self, draw: u64, bins: i64, frames: i64, device: tch::Device) -> Result<Tensor> {
        let seeds = diffuse_core::SampleSeeds::new(self.seed, self.first_frame as u64, frames.max(0) as usize);
        let z = seeds.normal(draw, &[2, bins], Kind::Float, device);
        Ok(z.f_permute([1, 2, 0])?.f_unsqueeze(0)?.f_contiguous()?)
    }
}

/// Turns a noisy spectrogram into a clean estimate by running a sampler with the model.
pub trait SpectrogramSampler {
    /// Short name for messages.
    fn name(&self) -> String;
    /// Network evaluations per call as planned (progress is reported once per evaluation; adaptive samplers give
    /// an estimate).
    fn nfe(&self) -> usize;
    /// `y` is the transformed, padded noisy spectrogram `[1, 2, F, T]` on the model's device; returns the clean
    /// estimate of the same shape and the network evaluations actually made. `noise` determines all random
    /// draws; `step` is called after each network evaluation.
    fn sample(
        &self,
        model: &ScoreModel,
        y: &Tensor,
        noise: FrameNoise,
        step: &mut dyn FnMut(),
    ) -> Result<(Tensor, usize)>;
}

/// The identity "sampler": returns `y` unchanged without calling the network. The output file then equals the
/// input up to the analysis/synthesis chain, which checks I/O, resampling and the transforms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passthrough;

impl SpectrogramSampler for Passthrough {
    fn name(&self) -> String {
        "passthrough".into()
    }
    fn nfe(&self) -> usize {
        0
    }
    fn sample(
        &self,
        _model: &ScoreModel,
        y: &Tensor,
        _noise: FrameNoise,
        _step: &mut dyn FnMut(),
    ) -> Result<(Tensor, usize)> {
        Ok((y.shallow_clone(), 0))
    }
}

/// A sampler given as a closure `(model, y, noise, step) -> x0` (how diffuse-core's solvers are plugged in).
pub struct FnSampler<F> {
    name: String,
    nfe: usize,
    f: F,
}

impl<F> FnSampler<F>
where
    F: Fn(&ScoreModel, &Tensor, FrameNoise, &mut dyn FnMut()) -> Result<Tensor>,
{
    /// Wraps `f`, which makes `nfe` network evaluations per call.
    pub fn new(name: impl Into<String>, nfe: usize, f: F) -> Self {
        FnSampler { name: name.into(), nfe, f }
    }
}

impl<F> SpectrogramSampler for FnSampler<F>
where
    F: Fn(&ScoreModel, &Tensor, FrameNoise, &mut dyn FnMut()) -> Result<Tensor>,
{
    fn name(&self) -> String {
        self.name.clone()
    }
    fn nfe(&self) -> usize {
        self.nfe
    }
    fn sample(
        &self,
        model: &ScoreModel,
        y: &Tensor,
        noise: FrameNoise,
        step: &mut dyn FnMut(),
    ) -> Result<(Tensor, usize)> {
        Ok(((self.f)(model, y, noise, step)?, self.nfe))
    }
}

/// How long inputs are cut into chunks of STFT frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    /// Frames per chunk (a multiple of the model's padding multiple keeps padding to the last chunk).
    pub frames: usize,
    /// Frames shared by neighbouring chunks and cross-faded; must be less than half of `frames`.
    pub overlap: usize,
}

/// Longest chunk the network sees at once (`--chunk-frames`; its memory grows with it): 8192 frames are 65 s at
/// 16 kHz.
pub const MAX_CHUNK_FRAMES: usize = 8192;

impl Default for Chunking {
    fn default() -> Self {
        Chunking { frames: 256, overlap: 32 }
    }
}

impl Chunking {
    /// A single chunk, whatever the length (the reference's whole-file processing).
    pub const WHOLE: Chunking = Chunking { frames: usize::MAX, overlap: 0 };

    /// Checks `0 ≤ 2·overlap < frames`.
    pub fn validate(&self) -> Result<()> {
        // WHOLE (one chunk, whatever the length) is a deliberate library choice; any other size is bounded.
        if *self != Self::WHOLE {
            diffuse_core::limits::at_most("chunk frames", self.frames, MAX_CHUNK_FRAMES)?;
        }
        if self.frames == 0 || self.overlap.saturating_mul(2) >= self.frames {
            return Err(Error::invalid(
                "chunking",
                format!("{} frames with {} overlap: need 2·overlap < frames", self.frames, self.overlap),
            ));
        }
        Ok(())
    }

    /// The chunks covering `total` frames: `[k·step, min(k·step + frames, total))` with step = frames − overlap.
    pub fn plan(&self, total: usize) -> Vec<Range<usize>> {
        let step = self.frames - self.overlap;
        let mut chunks = Vec::new();
        let mut start: usize = 0;
        loop {
            let end = start.saturating_add(self.frames).min(total);
            chunks.push(start..end);
            if end >= total {
                return chunks;
            }
            start += step;
        }
    }

    /// Cross-fade weight of chunk `k` of `chunks` at frame `t` (inside that chunk): a linear ramp over the overlap
    /// with each neighbour, 1 elsewhere; the weights of all chunks covering a frame sum to 1.
    pub fn weight(chunks: &[Range<usize>], k: usize, t: usize) -> f32 {
        let c = &chunks[k];
        let mut w = 1.0f64;
        if k > 0 && t < chunks[k - 1].end {
            let (s, e) = (c.start, chunks[k - 1].end);
            w *= (t - s) as f64 + 0.5;
            w /= (e - s) as f64;
        }
        if k + 1 < chunks.len() && t >= chunks[k + 1].start {
            let (s, e) = (chunks[k + 1].start, c.end);
            w *= 1.0 - ((t - s) as f64 + 0.5) / (e - s) as f64;
        }
        w as f32
    }
}

/// Wall-clock time of each stage of one enhancement.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Reading and writing files.
    pub io: Duration,
    /// Resampling to the model rate and back.
    pub resample: Duration,
    /// Normalisation, STFT, transform and padding.
    pub stft: Duration,
    /// The sampler (network evaluations and solver arithmetic).
    pub sampling: Duration,
    /// Cropping, cross-fade, inverse transform, inverse STFT and de-normalisation.
    pub inverse: Duration,
}

impl StageTimes {
    /// Sum of all stages.
    pub fn total(&self) -> Duration {
        self.io + self.resample + self.stft + self.sampling + self.inverse
    }

    /// Adds another file's times.
    pub fn add(&mut self, o: &StageTimes) {
        self.io += o.io;
        self.resample += o.resample;
        self.stft += o.stft;
        self.sampling += o.sampling;
        self.inverse += o.inverse;
    }
}

/// What one enhancement did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnhanceReport {
    /// Audio duration in seconds.
    pub duration_s: f64,
    /// Per-stage times.
    pub times: StageTimes,
    /// Chunks sampled (all channels).
    pub chunks: usize,
    /// Network evaluations made.
    pub nfe: usize,
    /// Samples clipped when writing an integer format.
    pub clipped: usize,
    /// Channels that were silent and passed through as silence.
    pub silent_channels: usize,
}

impl EnhanceReport {
    /// Real-time factor: processing time / audio duration (below 1 is faster than real time).
    pub fn rtf(&self) -> f64 {
        self.times.total().as_secs_f64() / self.duration_s.max(1e-9)
    }
}

/// Runs a model with a sampler over whole files.
pub struct Enhancer<'a> {
    model: &'a ScoreModel,
    sampler: &'a dyn SpectrogramSampler,
    stft: Stft,
    chunking: Chunking,
    seed: u64,
}

impl<'a> Enhancer<'a> {
    /// An enhancer for `model` using `sampler`; `seed` fixes every random draw.
    pub fn new(
        model: &'a ScoreModel,
        sampler: &'a dyn SpectrogramSampler,
        chunking: Chunking,
        seed: u64,
    ) -> Result<Self> {
        chunking.validate()?;
        let c = model.config();
        let stft = Stft::new(c.stft.n_fft, c.stft.hop, c.stft.window)?;
        Ok(Enhancer { model, sampler, stft, chunking, seed })
    }

    /// The model's sidecar.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// Network evaluations needed for `samples` samples (at the model rate) of one channel.
    pub fn planned_nfe(&self, samples: usize) -> usize {
        self.chunking.plan(self.stft.frames(samples)).len() * self.sampler.nfe()
    }

    /// Network evaluations needed for a whole file of `samples` samples at `rate` Hz with `channels` channels.
    pub fn planned_nfe_for(&self, samples: usize, rate: u32, channels: usize) -> usize {
        let model_len = crate::resample::resampled_len(samples, rate, self.config().sample_rate);
        channels * self.planned_nfe(model_len)
    }

    /// Enhances one channel given at the model rate; `name` is the file for error messages and `channel` picks
    /// the seeds. Returns `None` for an all-zero channel (nothing to normalise by: the caller keeps silence).
    pub fn enhance_channel(
        &self,
        signal: &[f32],
        name: &Path,
        channel: usize,
        times: &mut StageTimes,
        report: &mut EnhanceReport,
        step: &mut dyn FnMut(),
    ) -> Result<Option<Vec<f32>>> {
        let cfg = self.model.config();
        if signal.len() < self.stft.min_len() {
            return Err(Error::bad_audio(
                name,
                format!(
                    "too short: {} samples at the model's {} Hz, at least {} (one STFT frame) are needed",
                    signal.len(),
                    cfg.sample_rate,
                    self.stft.min_len()
                ),
            ));
        }
        let start = Instant::now();
        let Some(norm) = norm_factor(signal) else {
            return Ok(None);
        };
        let mut y = {
            let normalised: Vec<f32> = signal.iter().map(|&s| s / norm).collect();
            self.stft.forward(&normalised)?
        };
        cfg.transform.forward(&mut y);
        times.stft += start.elapsed();

        // The estimate overwrites `y` in place: once chunk k is sampled, its frames before the next chunk's start
        // are final and no later chunk reads them; the frames it shares with the next chunk wait, weighted, in
        // `carry` until that chunk adds its part. So the whole channel is held once, whatever the chunking.
        let chunks = self.chunking.plan(y.frames);
        let mut overlap = Overlap::default();
        for (k, range) in chunks.iter().enumerate() {
            let t0 = Instant::now();
            let part = slice_frames(&y, range.clone());
            let padded = pad_frames(&part, cfg.pad.multiple, cfg.pad.mode);
            drop(part);
            let y_t = padded.to_tensor().f_unsqueeze(0)?.f_to_device(self.model.device())?;
            drop(padded);
            let noise = FrameNoise {
                seed: diffuse_core::seed::sample_seed(self.seed, channel as u64),
                first_frame: range.start,
            };
            times.stft += t0.elapsed();

            let t1 = Instant::now();
            let (x, nfe) = self.sampler.sample(self.model, &y_t, noise, step)?;
            if x.size() != y_t.size() {
                return Err(Error::Shape {
                    op: "sampler output",
                    expected: format!("{:?}", y_t.size()),
                    got: format!("{:?}", x.size()),
                });
            }
            drop(y_t);
            let x = Spectrogram::from_tensor(&x.f_to_kind(Kind::Float)?)?;
            times.sampling += t1.elapsed();
            report.chunks += 1;
            report.nfe += nfe;

            let t2 = Instant::now();
            let x = crop_frames(&x, range.len())?;
            if x.data.iter().any(|v| !v.is_finite()) {
                return Err(Error::Numerical {
                    op: "sampler",
                    reason: format!("{}: non-finite value in chunk {k} of channel {}", name.display(), channel + 1),
                });
            }
            overlap.place(&mut y, &x, &chunks, k);
            times.inverse += t2.elapsed();
        }
        let t3 = Instant::now();
        cfg.transform.backward(&mut y);
        let mut out = self.stft.inverse(&y, signal.len())?;
        drop(y);
        for s in &mut out {
            *s *= norm;
        }
        times.inverse += t3.elapsed();
        Ok(Some(out))
    }

    /// Enhances every channel of `audio` (read from `name`) independently and returns audio at the input rate.
    pub fn enhance_audio(&self, audio: &Audio, name: &Path, step: &mut dyn FnMut()) -> Result<(Audio, EnhanceReport)> {
        let mut report = EnhanceReport { duration_s: audio.duration_s(), ..Default::default() };
        let mut times = StageTimes::default();
        let rate = self.model.config().sample_rate;
        if audio.channels.iter().all(|c| norm_factor(c).is_none()) {
            return Err(Error::Silent { path: name.to_path_buf() });
        }
        let mut channels = Vec::with_capacity(audio.channels.len());
        for (c, samples) in audio.channels.iter().enumerate() {
            let enhanced = if audio.sample_rate == rate {
                self.enhance_channel(samples, name, c, &mut times, &mut report, step)?
            } else {
                let t = Instant::now();
                let at_model = resample(samples, audio.sample_rate, rate)?;
                times.resample += t.elapsed();
                self.enhance_channel(&at_model, name, c, &mut times, &mut report, step)?
            };
            let t = Instant::now();
            let mut back = match enhanced {
                Some(x) if rate == audio.sample_rate => x,
                Some(x) => resample(&x, rate, audio.sample_rate)?,
                None => {
                    report.silent_channels += 1;
                    vec![0.0; samples.len()]
                }
            };
            back.resize(samples.len(), 0.0);
            times.resample += t.elapsed();
            channels.push(back);
        }
        report.times = times;
        Ok((Audio { sample_rate: audio.sample_rate, channels, format: audio.format }, report))
    }

    /// Reads `input`, enhances it and writes `output` atomically in the input's sample format.
    pub fn enhance_file(
        &self,
        input: &Path,
        output: &Path,
        force: bool,
        step: &mut dyn FnMut(),
    ) -> Result<EnhanceReport> {
        let t = Instant::now();
        let audio = read_wav(input)?;
        let read = t.elapsed();
        let (enhanced, mut report) = self.enhance_audio(&audio, input, step)?;
        let t = Instant::now();
        let WriteReport { clipped } = write_wav_new(output, &enhanced, output_format(audio.format), force)?;
        report.times.io += read + t.elapsed();
        report.clipped = clipped;
        Ok(report)
    }
}

/// The output format for an input format (the same).
fn output_format(input: SampleFormat) -> SampleFormat {
    input
}

/// The cross-fade of chunk estimates written over the input spectrogram in place (see
/// [`Enhancer::enhance_channel`]): the weighted frames a chunk shares with the next one wait here.
#[derive(Debug, Default)]
struct Overlap {
    /// `2·F` rows of `frames.len()` values.
    carry: Vec<f32>,
    frames: Range<usize>,
}

impl Overlap {
    /// Adds chunk `k`'s estimate `x` (its frames only, `[2, F, len]`) with its cross-fade weights: frames before
    /// the next chunk's start are final and overwrite `y`; the rest are kept for the next chunk. Chunks must be
    /// placed in order and no three may overlap (as [`Chunking::plan`] guarantees).
    fn place(&mut self, y: &mut Spectrogram, x: &Spectrogram, chunks: &[Range<usize>], k: usize) {
        let range = chunks[k].clone();
        let rows = 2 * y.bins;
        let next_start = chunks.get(k + 1).map_or(range.end, |c| c.start);
        let next = next_start..range.end;
        let mut carry = vec![0.0f32; rows * next.len()];
        for row in 0..rows {
            for (i, t) in range.clone().enumerate() {
                let w = if chunks.len() == 1 { 1.0 } else { Chunking::weight(chunks, k, t) };
                let mut value = w * x.data[row * range.len() + i];
                if self.frames.contains(&t) {
                    value += self.carry[row * self.frames.len() + (t - self.frames.start)];
                }
                if t < next_start {
                    y.data[row * y.frames + t] = value;
                } else {
                    carry[row * next.len() + (t - next_start)] = value;
                }
            }
        }
        self.carry = carry;
        self.frames = next;
    }
}

/// Frames `range` of a spectrogram.
fn slice_frames(spec: &Spectrogram, range: Range<usize>) -> Spectrogram {
    let n = range.len();
    let mut out = Spectrogram::zeros(spec.bins, n);
    for row in 0..2 * spec.bins {
        out.data[row * n..(row + 1) * n]
            .copy_from_slice(&spec.data[row * spec.frames + range.start..row * spec.frames + range.end]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunks_cover_every_frame_with_weights_summing_to_one(total in 1usize..5000, frames in 3usize..700, overlap_frac in 0.0f64..0.49) {
            let overlap = ((frames as f64 * overlap_frac) as usize).min((frames - 1) / 2);
            let c = Chunking { frames, overlap };
            c.validate().unwrap();
            let chunks = c.plan(total);
            prop_assert_eq!(chunks[0].start, 0);
            prop_assert_eq!(chunks.last().unwrap().end, total);
            let mut sum = vec![0.0f64; total];
            for (k, r) in chunks.iter().enumerate() {
                prop_assert!(r.len() <= frames && !r.is_empty());
                if k > 0 {
                    prop_assert_eq!(chunks[k - 1].end - r.start, overlap);
                    prop_assert!(r.start <= chunks[k - 1].end, "gap before chunk {}", k);
                    prop_assert!(k < 2 || r.start >= chunks[k - 2].end, "three chunks overlap");
                }
                for t in r.clone() {
                    let w = Chunking::weight(&chunks, k, t);
                    prop_assert!((0.0..=1.0).contains(&w));
                    sum[t] += f64::from(w);
                }
            }
            for (t, s) in sum.iter().enumerate() {
                prop_assert!((s - 1.0).abs() < 1e-6, "frame {}: weights sum to {}", t, s);
            }
        }
    }

    #[test]
    fn placing_chunks_in_place_equals_cross_fading_into_a_separate_buffer() {
        let bins = 3;
        for (total, frames, shared) in [(100, 16, 4), (100, 16, 7), (33, 10, 0), (9, 16, 4), (64, 16, 4)] {
            let chunking = Chunking { frames, overlap: shared };
            let chunks = chunking.plan(total);
            // Arbitrary chunk estimates, different in every chunk and frame.
            let estimate = |k: usize, row: usize, t: usize| ((k * 131 + row * 17 + t * 7) % 23) as f32 - 11.0 + 0.25;
            let mut expected = Spectrogram::zeros(bins, total);
            for (k, r) in chunks.iter().enumerate() {
                for row in 0..2 * bins {
                    for t in r.clone() {
                        let w = if chunks.len() == 1 { 1.0 } else { Chunking::weight(&chunks, k, t) };
                        expected.data[row * total + t] += w * estimate(k, row, t);
                    }
                }
            }
            let mut y = Spectrogram { bins, frames: total, data: vec![f32::NAN; 2 * bins * total] };
            let mut overlap = Overlap::default();
            for (k, r) in chunks.iter().enumerate() {
                let mut x = Spectrogram::zeros(bins, r.len());
                for row in 0..2 * bins {
                    for (i, t) in r.clone().enumerate() {
                        x.data[row * r.len() + i] = estimate(k, row, t);
                    }
                }
                overlap.place(&mut y, &x, &chunks, k);
            }
            for (a, b) in y.data.iter().zip(&expected.data) {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{total}/{frames}/{shared}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn short_inputs_are_one_chunk_and_bad_chunking_is_rejected() {
        assert_eq!(Chunking::default().plan(100), vec![0..100]);
        assert_eq!(Chunking::default(), Chunking { frames: 256, overlap: 32 });
        assert_eq!(Chunking::WHOLE.plan(1_000_000), vec![0..1_000_000]);
        assert_eq!(Chunking { frames: 10, overlap: 2 }.plan(25), vec![0..10, 8..18, 16..25]);
        assert!(Chunking { frames: 10, overlap: 5 }.validate().is_err());
    }
}
