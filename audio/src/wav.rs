//! WAV input and output (hound): 8/16/24/32-bit integer and 32-bit float PCM, any channel count and rate.
//!
//! Samples are held as `f32` in `[-1, 1)` per channel. Reading checks everything a user can get wrong (not a
//! WAV, truncated header or data, no samples, NaN/Inf, unsupported formats) and names the file in the error.
//! Writing goes to a temporary file in the target folder that is renamed into place only when complete.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Lowest sample rate accepted in a WAV header or a model sidecar. Lower rates are not audio a speech model can
/// use, and resampling 1 Hz to 16 kHz would multiply the length by 16 000 (a 133 KB file asked for 8.7 GB).
pub const MIN_SAMPLE_RATE: u32 = 1000;
/// Highest sample rate accepted (the highest rate of common audio hardware).
pub const MAX_SAMPLE_RATE: u32 = 768_000;

/// Checks a sample rate against [`MIN_SAMPLE_RATE`]..=[`MAX_SAMPLE_RATE`]; `what` says where it came from.
pub fn check_sample_rate(rate: u32) -> std::result::Result<(), String> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(format!("sample rate {rate} Hz is outside the supported {MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz"))
    }
}

/// How samples are stored in a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    /// Signed integer PCM with this many bits (8, 16, 24 or 32; 8-bit is stored unsigned in the file).
    Int(u16),
    /// IEEE 32-bit float PCM.
    Float32,
}

impl std::fmt::Display for SampleFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SampleFormat::Int(bits) => write!(f, "{bits}-bit integer"),
            SampleFormat::Float32 => write!(f, "32-bit float"),
        }
    }
}

/// Multi-channel audio in memory: one `Vec<f32>` per channel, all of the same length.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Samples per second.
    pub sample_rate: u32,
    /// The channels' samples, full scale `[-1, 1)`.
    pub channels: Vec<Vec<f32>>,
    /// The format the audio was read from (and is written back in by default).
    pub format: SampleFormat,
}

impl Audio {
    /// Samples per channel.
    pub fn len(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length in seconds.
    pub fn duration_s(&self) -> f64 {
        self.len() as f64 / f64::from(self.sample_rate.max(1))
    }
}

/// Frames, sample rate and channel count from a WAV header (for planning; [`read_wav`] checks the data).
pub fn probe(path: &Path) -> Result<(usize, u32, usize)> {
    let file = open(path)?;
    let reader = hound::WavReader::new(BufReader::new(file)).map_err(|e| header_error(path, e))?;
    let spec = reader.spec();
    check_sample_rate(spec.sample_rate).map_err(|why| Error::bad_audio(path, why))?;
    Ok((reader.duration() as usize, spec.sample_rate, usize::from(spec.channels)))
}

/// What [`write_wav`] had to change to fit the samples into the file's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Samples outside the integer format's range that were clipped (always 0 for float output).
    pub clipped: usize,
}

/// Reads a WAV file; every way it can be unusable is an [`Error::BadAudio`] naming the file.
pub fn read_wav(path: &Path) -> Result<Audio> {
    let file = open(path)?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let reader = hound::WavReader::new(BufReader::new(file)).map_err(|e| header_error(path, e))?;
    let spec = reader.spec();
    let format = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => SampleFormat::Int(bits),
        (hound::SampleFormat::Float, 32) => SampleFormat::Float32,
        (kind, bits) => {
            let kind = if kind == hound::SampleFormat::Float { "float" } else { "integer" };
            return Err(Error::bad_audio(
                path,
                format!(
                    "unsupported sample format: {bits}-bit {kind} (supported: 8/16/24/32-bit integer, 32-bit float)"
                ),
            ));
        }
    };
    if spec.channels == 0 {
        return Err(Error::bad_audio(path, "the header declares 0 channels"));
    }
    if spec.sample_rate == 0 {
        return Err(Error::bad_audio(path, "the header declares a sample rate of 0 Hz"));
    }
    check_sample_rate(spec.sample_rate).map_err(|why| Error::bad_audio(path, format!("header: {why}")))?;
    let n_channels = usize::from(spec.channels);
    let declared = reader.len() as usize;
    if declared == 0 {
        return Err(Error::bad_audio(path, "the file contains no audio samples"));
    }
    // The header's count is only a claim: reserve no more than the file can hold.
    let bytes_per_sample = usize::from(spec.bits_per_sample.div_ceil(8)).max(1);
    let mut interleaved = Vec::with_capacity(declared.min(file_len as usize / bytes_per_sample));
    let data_error = |e: hound::Error, read: usize| -> Error {
        match e {
            hound::Error::IoError(_) => Error::bad_audio(
                path,
                format!("truncated: the header declares {declared} samples but the data ends after {read}"),
            ),
            other => Error::bad_audio(path, format!("corrupt sample data after {read} samples: {other}")),
        }
    };
    match format {
        SampleFormat::Float32 => {
            let mut reader = reader;
            for (i, s) in reader.samples::<f32>().enumerate() {
                let s = s.map_err(|e| data_error(e, i))?;
                if !s.is_finite() {
                    return Err(Error::bad_audio(
                        path,
                        format!(
                            "sample {} of channel {} is {s}; audio must be finite",
                            i / n_channels,
                            i % n_channels + 1
                        ),
                    ));
                }
                interleaved.push(s);
            }
        }
        SampleFormat::Int(bits) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            let mut reader = reader;
            for (i, s) in reader.samples::<i32>().enumerate() {
                let s = s.map_err(|e| data_error(e, i))?;
                interleaved.push((f64::from(s) * scale) as f32);
            }
        }
    }
    if interleaved.len() < declared {
        return Err(Error::bad_audio(
            path,
            format!("truncated: the header declares {declared} samples but the data ends after {}", interleaved.len()),
        ));
    }
    let frames = interleaved.len() / n_channels;
    if n_channels == 1 {
        // Mono: the samples are the channel (no second copy of a long file).
        interleaved.truncate(frames);
        return Ok(Audio { sample_rate: spec.sample_rate, channels: vec![interleaved], format });
    }
    let mut channels = vec![Vec::with_capacity(frames); n_channels];
    for frame in interleaved.chunks_exact(n_channels) {
        for (c, &s) in frame.iter().enumerate() {
            channels[c].push(s);
        }
    }
    Ok(Audio { sample_rate: spec.sample_rate, channels, format })
}

fn header_error(path: &Path, e: hound::Error) -> Error {
    let reason = match e {
        // The file is already open: a read error here is the header running out (hound reports it as "Other").
        hound::Error::IoError(io)
            if !matches!(io.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::Interrupted) =>
        {
            "not a WAV file or truncated header (the file ends before the header is complete)".to_string()
        }
        hound::Error::IoError(io) => return Error::io(path, io),
        hound::Error::FormatError(_) if float_bits(path) == Some(64) => {
            "64-bit float samples are not supported (supported: 8/16/24/32-bit integer and 32-bit float); convert \
             with e.g. `sox IN.wav -e floating-point -b 32 OUT.wav`"
                .to_string()
        }
        hound::Error::FormatError(msg) => format!("not a valid WAV file ({msg})"),
        hound::Error::Unsupported => "unsupported WAV encoding (only PCM integer and IEEE float)".to_string(),
        hound::Error::TooWide => "sample width too large (more than 32 bits)".to_string(),
        hound::Error::InvalidSampleFormat => "invalid sample format in the header".to_string(),
        other => format!("cannot read the WAV header: {other}"),
    };
    Error::bad_audio(path, reason)
}

/// Opens an input WAV file: a regular file (a FIFO would block), marked as an input so no output replaces it.
fn open(path: &Path) -> Result<File> {
    diffuse_core::io::open_input(path).map_err(|e| match e {
        diffuse_core::Error::File { path, reason } => Error::bad_audio(path, reason),
        other => Error::Core(other),
    })
}

/// The bits per sample of an IEEE-float `fmt ` chunk (format tag 3, or 0xFFFE with the float sub-format), read
/// directly from the file: hound rejects 64-bit float before saying what it is, and the error should name it.
fn float_bits(path: &Path) -> Option<u16> {
    use std::io::Read;
    let mut head = Vec::new();
    File::open(path).ok()?.take(4096).read_to_end(&mut head).ok()?;
    if head.get(0..4)? != b"RIFF" || head.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12;
    while at + 8 <= head.len() {
        let size = u32::from_le_bytes(head[at + 4..at + 8].try_into().ok()?) as usize;
        if &head[at..at + 4] == b"fmt " {
            let fmt = head.get(at + 8..at + 8 + size.min(40))?;
            let tag = u16::from_le_bytes(fmt.get(0..2)?.try_into().ok()?);
            let bits = u16::from_le_bytes(fmt.get(14..16)?.try_into().ok()?);
            let float_ext = tag == 0xFFFE && fmt.get(24..26) == Some(&[3, 0]);
            return (tag == 3 || float_ext).then_some(bits);
        }
        at = at.checked_add(8 + size + (size & 1))?;
    }
    None
}

/// Writes `audio` as a WAV file in `format`, atomically: nothing appears at `path` unless the whole file was
/// written, and an existing file is replaced (see [`write_wav_new`] for outputs a user names). Integer formats
/// clip samples outside `[-1, 1)`; the report counts them.
pub fn write_wav(path: &Path, audio: &Audio, format: SampleFormat) -> Result<WriteReport> {
    write_wav_new(path, audio, format, true)
}

/// [`write_wav`] that keeps an existing file unless `force` (also one created meanwhile by another process) and
/// never replaces an input of this run.
pub fn write_wav_new(path: &Path, audio: &Audio, format: SampleFormat, force: bool) -> Result<WriteReport> {
    let n_channels = audio.channels.len();
    if n_channels == 0 || n_channels > usize::from(u16::MAX) {
        return Err(Error::invalid("audio", format!("cannot write {n_channels} channels")));
    }
    let frames = audio.len();
    if audio.channels.iter().any(|c| c.len() != frames) {
        return Err(Error::invalid("audio", "channels of different lengths"));
    }
    let (bits, sample_format) = match format {
        SampleFormat::Int(b @ (8 | 16 | 24 | 32)) => (b, hound::SampleFormat::Int),
        SampleFormat::Int(b) => {
            return Err(Error::invalid("format", format!("{b}-bit integer is not supported")));
        }
        SampleFormat::Float32 => (32, hound::SampleFormat::Float),
    };
    let spec = hound::WavSpec {
        channels: n_channels as u16,
        sample_rate: audio.sample_rate,
        bits_per_sample: bits,
        sample_format,
    };
    let mut report = WriteReport::default();
    crate::weights::write_file_forced(path, force, |file| {
        let mut writer = hound::WavWriter::new(BufWriter::new(&mut *file), spec).map_err(hound_io)?;
        for i in 0..frames {
            for ch in &audio.channels {
                let s = ch[i];
                match format {
                    SampleFormat::Float32 => writer.write_sample(s).map_err(hound_io)?,
                    SampleFormat::Int(bits) => {
                        let max = ((1i64 << (bits - 1)) - 1) as f64;
                        let min = -((1i64 << (bits - 1)) as f64);
                        let v = (f64::from(s) * (max + 1.0)).round();
                        if v > max || v < min {
                            report.clipped += 1;
                        }
                        writer.write_sample(v.clamp(min, max) as i32).map_err(hound_io)?;
                    }
                }
            }
        }
        writer.finalize().map_err(hound_io)?;
        pad_odd_data_chunk(file)
    })?;
    Ok(report)
}

/// RIFF chunks are word-aligned: a data chunk of odd length (8-bit mono of odd length) needs a pad byte after
/// it, counted in the RIFF size but not in the chunk's own size. hound omits it.
fn pad_odd_data_chunk(file: &mut File) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let len = file.seek(SeekFrom::End(0))?;
    if len % 2 == 0 {
        return Ok(());
    }
    file.write_all(&[0])?;
    let riff_size = u32::try_from(len + 1 - 8).map_err(|_| std::io::Error::other("WAV file over 4 GiB"))?;
    file.seek(SeekFrom::Start(4))?;
    file.write_all(&riff_size.to_le_bytes())?;
    Ok(())
}

/// hound's errors as I/O errors (the atomic writer names the file).
fn hound_io(e: hound::Error) -> std::io::Error {
    match e {
        hound::Error::IoError(io) => io,
        other => std::io::Error::other(other.to_string()),
    }
}

/// Appends every `.wav` file under `dir` (recursively, any letter case, sorted by path) to `out`: each real
/// file once (symlink cycles and repeated links are not followed again), regular files only (no FIFOs).
pub fn collect_wavs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let files =
        diffuse_core::io::walk_files(dir, &|p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")))
            .map_err(|e| match e {
                diffuse_core::Error::File { path, reason } => Error::data(path, reason),
                other => Error::Core(other),
            })?;
    out.extend(files);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(n: usize, rate: u32, f: f64, amp: f64) -> Vec<f32> {
        (0..n).map(|i| (amp * (2.0 * std::f64::consts::PI * f * i as f64 / f64::from(rate)).sin()) as f32).collect()
    }

    #[test]
    fn every_format_round_trips_within_its_quantisation_step() {
        let dir = tempfile::tempdir().unwrap();
        for (format, step) in [
            (SampleFormat::Int(8), 1.0 / 128.0),
            (SampleFormat::Int(16), 1.0 / 32768.0),
            (SampleFormat::Int(24), 1.0 / 8_388_608.0),
            (SampleFormat::Int(32), 1.0 / 2_147_483_648.0),
            (SampleFormat::Float32, 0.0),
        ] {
            let audio = Audio {
                sample_rate: 22050,
                channels: vec![sine(1000, 22050, 440.0, 0.9), sine(1000, 22050, 1000.0, 0.5), vec![0.25; 1000]],
                format,
            };
            let path = dir.path().join(format!("{format}.wav"));
            let report = write_wav(&path, &audio, format).unwrap();
            assert_eq!(report.clipped, 0);
            let back = read_wav(&path).unwrap();
            assert_eq!(back.format, format);
            assert_eq!(back.sample_rate, 22050);
            assert_eq!(back.channels.len(), 3);
            for (a, b) in audio.channels.iter().zip(&back.channels) {
                assert_eq!(a.len(), b.len());
                let err = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
                assert!(err <= step * 0.5 + 1e-9, "{format}: error {err} above half a step {step}");
            }
        }
    }

    #[test]
    fn integer_output_clips_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let audio =
            Audio { sample_rate: 8000, channels: vec![vec![1.5, -2.0, 0.5, 1.0]], format: SampleFormat::Int(16) };
        let path = dir.path().join("clip.wav");
        let report = write_wav(&path, &audio, SampleFormat::Int(16)).unwrap();
        assert_eq!(report.clipped, 3, "1.5, -2.0 and exactly 1.0 exceed the 16-bit range");
        let back = read_wav(&path).unwrap();
        assert_eq!(back.channels[0][1], -1.0);
        assert!((back.channels[0][0] - 32767.0 / 32768.0).abs() < 1e-9);
    }

    #[test]
    fn odd_length_8_bit_output_has_the_riff_pad_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.wav");
        let audio = Audio { sample_rate: 8000, channels: vec![vec![0.25; 3]], format: SampleFormat::Int(8) };
        write_wav(&path, &audio, SampleFormat::Int(8)).unwrap();
        let b = std::fs::read(&path).unwrap();
        // 44-byte header + 3 data bytes + 1 pad byte; the RIFF size counts the pad, the data size does not.
        assert_eq!(b.len(), 48);
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 40);
        assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 3);
        assert_eq!(read_wav(&path).unwrap().channels[0].len(), 3);
    }

    #[test]
    fn bad_files_give_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.wav");
        let audio =
            Audio { sample_rate: 16000, channels: vec![sine(4000, 16000, 300.0, 0.5)], format: SampleFormat::Int(16) };
        write_wav(&good, &audio, SampleFormat::Int(16)).unwrap();
        let bytes = std::fs::read(&good).unwrap();

        let check = |name: &str, data: &[u8], expect: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            let err = read_wav(&p).unwrap_err().to_string();
            assert!(err.contains(name), "{name}: error does not name the file: {err}");
            assert!(err.contains(expect), "{name}: expected '{expect}' in: {err}");
        };
        check("text.wav", b"this is not audio at all, just some text that is long enough", "not a valid WAV");
        check("header.wav", &bytes[..20], "truncated header");
        check("data.wav", &bytes[..bytes.len() / 2], "truncated");
        check("empty.wav", &[], "truncated header");

        let zero = dir.path().join("zero.wav");
        write_wav(
            &zero,
            &Audio { sample_rate: 16000, channels: vec![vec![]], format: SampleFormat::Int(16) },
            SampleFormat::Int(16),
        )
        .unwrap();
        let err = read_wav(&zero).unwrap_err().to_string();
        assert!(err.contains("zero.wav") && err.contains("no audio samples"), "{err}");

        let nan = dir.path().join("nan.wav");
        let bad = Audio { sample_rate: 16000, channels: vec![vec![0.1, f32::NAN, 0.2]], format: SampleFormat::Float32 };
        write_wav(&nan, &bad, SampleFormat::Float32).unwrap();
        let err = read_wav(&nan).unwrap_err().to_string();
        assert!(err.contains("nan.wav") && err.contains("sample 1 of channel 1 is NaN"), "{err}");

        let inf = dir.path().join("inf.wav");
        let bad = Audio {
            sample_rate: 16000,
            channels: vec![vec![0.1, 0.3], vec![0.0, f32::INFINITY]],
            format: SampleFormat::Float32,
        };
        write_wav(&inf, &bad, SampleFormat::Float32).unwrap();
        let err = read_wav(&inf).unwrap_err().to_string();
        assert!(err.contains("inf.wav") && err.contains("channel 2 is inf"), "{err}");

        // A 12-bit file: hound can write it, we refuse it by name.
        let odd = dir.path().join("twelve.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 12,
            sample_format: hound::SampleFormat::Int,
        };
        if let Ok(mut w) = hound::WavWriter::create(&odd, spec) {
            for i in 0..100 {
                let _ = w.write_sample(i as i16);
            }
            let _ = w.finalize();
            let err = read_wav(&odd).unwrap_err().to_string();
            assert!(err.contains("twelve.wav"), "{err}");
        }
        let missing = dir.path().join("missing.wav");
        assert!(read_wav(&missing).unwrap_err().to_string().contains("missing.wav"));
    }
}
