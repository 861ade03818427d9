//! Fuzzing the audio crate's parsers of user files with property tests: WAV (`wav::read_wav`, `wav::probe`), model
//! sidecars (`ModelConfig::parse`) and safetensors (`weights::read_metadata`, `weights::from_bytes`). Inputs are
//! arbitrary bytes, the repository's example files with random edits, and headers with boundary values in every
//! field. Every case must return `Ok` or an error naming the file, within 2 s and 256 MiB (support/fuzz_harness.rs).
//!
//! Tests named `issue23_*` pin defects that are being fixed elsewhere (resample.rs, config.rs, wav.rs,
//! weights.rs); they fail until those fixes land.

#[path = "../../support/fuzz_harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diffuse_audio::ModelConfig;
use diffuse_audio::resample::{resample, resampled_len};
use diffuse_audio::wav::{Audio, SampleFormat, probe, read_wav, write_wav};
use diffuse_audio::weights::{from_bytes, read_metadata, to_bytes};
use harness::{arbitrary_bytes, isolated, mutated, mutated_json, repo_file, run_cases, word};
use proptest::prelude::*;

/// The model rate the enhancer resamples to.
const MODEL_RATE: u32 = 16_000;

fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    (dir, path)
}

// ---------------------------------------------------------------------------------------------------------- WAV

/// A canonical 44-byte WAV header with every field given, then `data`.
fn wav_bytes(
    format: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    block_align: u16,
    data_len: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(44 + data.len());
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36u32.wrapping_add(data.len() as u32)).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&format.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&rate.wrapping_mul(u32::from(block_align)).to_le_bytes());
    b.extend_from_slice(&block_align.to_le_bytes());
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    b.extend_from_slice(data);
    b
}

/// A consistent little header: `frames` frames of a ramp.
fn pcm(format: u16, channels: u16, rate: u32, bits: u16, frames: usize) -> Vec<u8> {
    let align = channels * bits.div_ceil(8);
    let data: Vec<u8> = (0..frames * usize::from(align)).map(|i| (i * 37 % 251) as u8).collect();
    wav_bytes(format, channels, rate, bits, align, data.len() as u32, &data)
}

/// Seed WAVs: every format `write_wav` writes (hound's extensible headers included), mono and 3 channels, and the
/// head of the repository's example speech (its header declares more data than the cut keeps).
fn wav_seeds() -> Vec<Vec<u8>> {
    let (_dir, path) = scratch("seed.wav");
    let mut seeds = Vec::new();
    for format in [
        SampleFormat::Int(8),
        SampleFormat::Int(16),
        SampleFormat::Int(24),
        SampleFormat::Int(32),
        SampleFormat::Float32,
    ] {
        for n_channels in [1, 3] {
            let channels =
                (0..n_channels).map(|c| (0..40).map(|i| ((i * (c + 1)) as f32 * 0.05).sin() * 0.5).collect()).collect();
            let audio = Audio { sample_rate: 16_000, channels, format };
            write_wav(&path, &audio, format).expect("write a seed");
            seeds.push(std::fs::read(&path).expect("read a seed"));
        }
    }
    let speech = repo_file("examples/audio/noisy/speech.wav");
    seeds.push(speech[..speech.len().min(2048)].to_vec());
    seeds
}

/// Reads `bytes` as a WAV file the way `diffuse audio enhance` does (probe for planning, then read); checks that
/// the result is sane or the error names the file.
fn check_wav(bytes: &[u8], path: &Path) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| e.to_string())?;
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    match probe(path) {
        Ok(_) => {}
        Err(e) if e.to_string().contains(&name) => {}
        Err(e) => return Err(format!("probe error does not name the file: {e}")),
    }
    match read_wav(path) {
        Ok(a) => {
            if a.sample_rate == 0 || a.channels.is_empty() || a.is_empty() {
                return Err(format!(
                    "accepted an empty or 0 Hz file: {} Hz, {} channels",
                    a.sample_rate,
                    a.channels.len()
                ));
            }
            if a.channels.iter().any(|c| c.len() != a.len() || c.iter().any(|s| !s.is_finite())) {
                return Err("channels of different lengths or non-finite samples".into());
            }
            Ok(())
        }
        Err(e) if e.to_string().contains(&name) => Ok(()),
        Err(e) => Err(format!("read_wav error does not name the file: {e}")),
    }
}

/// Header fields at boundary values: format code (PCM, float, other), channels, rate, bits, block align, data
/// length, with up to 256 data bytes.
fn wav_header() -> impl Strategy<Value = Vec<u8>> {
    let format = prop_oneof![Just(1u16), Just(3), Just(0), Just(2), Just(0xfffe), any::<u16>()];
    let channels = prop_oneof![Just(1u16), Just(2), Just(0), Just(65535), any::<u16>()];
    let bits =
        prop_oneof![Just(8u16), Just(16), Just(24), Just(32), Just(0), Just(7), Just(64), Just(65535), any::<u16>()];
    let align = prop_oneof![Just(None), any::<u16>().prop_map(Some)];
    let len = prop_oneof![Just(None), word().prop_map(Some)];
    (format, channels, word(), bits, align, len, proptest::collection::vec(any::<u8>(), 0..256)).prop_map(
        |(format, channels, rate, bits, align, len, data)| {
            let align = align.unwrap_or_else(|| channels.wrapping_mul(bits.div_ceil(8)));
            let len = len.unwrap_or(data.len() as u32);
            wav_bytes(format, channels, rate, bits, align, len, &data)
        },
    )
}

#[test]
fn wav_arbitrary_bytes() {
    isolated("wav_arbitrary_bytes", || {
        let (_dir, path) = scratch("case.wav");
        run_cases("wav_arbitrary_bytes", 300, arbitrary_bytes(512), |b| check_wav(&b, &path));
        // Arbitrary bytes rarely pass "RIFF....WAVE": also after a valid magic.
        let tail = arbitrary_bytes(512).prop_map(|b| [b"RIFF\x24\0\0\0WAVE".as_slice(), &b].concat());
        run_cases("wav_arbitrary_after_magic", 300, tail, |b| check_wav(&b, &path));
    });
}

#[test]
fn wav_mutated_seeds() {
    isolated("wav_mutated_seeds", || {
        let (_dir, path) = scratch("case.wav");
        run_cases("wav_mutated_seeds", 600, mutated(wav_seeds()), |b| check_wav(&b, &path));
    });
}

#[test]
fn wav_header_fields() {
    isolated("wav_header_fields", || {
        let (_dir, path) = scratch("case.wav");
        run_cases("wav_header_fields", 600, wav_header(), |b| check_wav(&b, &path));
    });
}

/// Reads a WAV and resamples every channel to the model rate, as the enhancer does; Ok or a clear error.
fn read_and_resample(bytes: &[u8], path: &Path) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| e.to_string())?;
    if let Ok((frames, rate, _)) = probe(path) {
        let _ = resampled_len(frames, rate, MODEL_RATE);
    }
    if let Ok(a) = read_wav(path) {
        for c in &a.channels {
            let _ = resample(c, a.sample_rate, MODEL_RATE);
        }
    }
    Ok(())
}

#[test]
fn issue23_wav_rate_0_divides_by_zero_in_resampled_len() {
    isolated("issue23_wav_rate_0_divides_by_zero_in_resampled_len", || {
        let (_dir, path) = scratch("zero-hz.wav");
        read_and_resample(&pcm(1, 1, 0, 16, 64), &path).unwrap();
    });
}

#[test]
fn issue23_wav_rate_1hz_resample_asks_for_gigabytes() {
    isolated("issue23_wav_rate_1hz_resample_asks_for_gigabytes", || {
        let (_dir, path) = scratch("one-hz.wav");
        read_and_resample(&pcm(1, 1, 1, 16, 64), &path).unwrap();
    });
}

#[test]
fn issue23_wav_any_rate_resamples_within_limits() {
    isolated("issue23_wav_any_rate_resamples_within_limits", || {
        let (_dir, path) = scratch("rate.wav");
        let rates = prop_oneof![word(), 1u32..200_000];
        run_cases("wav_any_rate_resample", 60, rates, |rate| read_and_resample(&pcm(1, 1, rate, 16, 64), &path));
    });
}

#[test]
fn issue23_wav_float64_is_named_as_unsupported() {
    isolated("issue23_wav_float64_is_named_as_unsupported", || {
        let (_dir, path) = scratch("f64.wav");
        std::fs::write(&path, pcm(3, 1, 16_000, 64, 16)).unwrap();
        let e = read_wav(&path).unwrap_err().to_string();
        assert!(e.contains("64-bit float"), "the error should name the format (64-bit float), got: {e}");
    });
}

/// Found by `wav_header_fields` (not in the issue's list): `read_wav` reserved the sample count the
/// header declares (`Vec::with_capacity`) before reading, so a 100-byte file whose data chunk says 4 GiB asks for
/// 16 GiB of f32.
#[test]
fn issue23_wav_huge_data_length_is_reserved_before_reading() {
    isolated("issue23_wav_huge_data_length_is_reserved_before_reading", || {
        let (_dir, path) = scratch("huge.wav");
        let data = [0u8; 100];
        std::fs::write(&path, wav_bytes(1, 1, 16_000, 8, 1, u32::MAX, &data)).unwrap();
        let e = read_wav(&path).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    });
}

// ------------------------------------------------------------------------------------------------- sidecars

fn sidecar_seeds() -> Vec<String> {
    let mut seeds = vec![
        diffuse_audio::default_model::SIDECAR.to_string(),
        serde_json::to_string_pretty(&ModelConfig::sgmse_16k()).unwrap(),
    ];
    for f in ["tests/fixtures/audio/tiny_ncsnpp.json", "tests/fixtures/audio/seam_ncsnpp.json"] {
        seeds.push(String::from_utf8(repo_file(f)).unwrap());
    }
    seeds
}

fn check_sidecar(text: &str) -> Result<(), String> {
    let name = Path::new("fuzz-sidecar.json");
    match ModelConfig::parse(text, name) {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("fuzz-sidecar.json") => Ok(()),
        Err(e) => Err(format!("error does not name the sidecar: {e}")),
    }
}

#[test]
fn sidecar_arbitrary_text() {
    isolated("sidecar_arbitrary_text", || {
        run_cases("sidecar_arbitrary_text", 500, ".{0,300}", |t: String| check_sidecar(&t));
    });
}

#[test]
fn sidecar_mutated_json() {
    isolated("sidecar_mutated_json", || {
        run_cases("sidecar_mutated_json", 500, mutated_json(sidecar_seeds()), |t| check_sidecar(&t));
    });
}

#[test]
fn issue23_sidecar_n_fft_1e9_allocates_gigabytes() {
    isolated("issue23_sidecar_n_fft_1e9_allocates_gigabytes", || {
        let mut v: serde_json::Value = serde_json::from_str(diffuse_audio::default_model::SIDECAR).unwrap();
        v["stft"]["n_fft"] = serde_json::json!(1_000_000_000u64);
        let e = ModelConfig::parse(&v.to_string(), Path::new("big.json")).unwrap_err().to_string();
        assert!(e.contains("n_fft"), "{e}");
    });
}

// ---------------------------------------------------------------------------------------------- safetensors

fn safetensors_seeds() -> Vec<Vec<u8>> {
    let t = |v: &[f32], shape: &[i64]| tch::Tensor::from_slice(v).reshape(shape);
    let meta: BTreeMap<String, String> = [("format".to_string(), "pt".to_string()), ("step".into(), "7".into())].into();
    let mut seeds = vec![
        to_bytes(&[("a".into(), t(&[1.0, 2.0, 3.0, 4.0], &[2, 2])), ("b".into(), t(&[5.0], &[1]))], &meta).unwrap(),
        to_bytes(&[("w".into(), t(&[0.5; 6], &[1, 2, 3]))], &BTreeMap::new()).unwrap(),
    ];
    // The head of a committed fixture: its header, then too little data.
    let fixture = repo_file("tests/fixtures/audio/ode_sampler.safetensors");
    seeds.push(fixture[..fixture.len().min(4096)].to_vec());
    seeds
}

fn check_safetensors(bytes: &[u8], path: &Path) -> Result<(), String> {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let named = |what: &str, e: diffuse_audio::Error| {
        let s = e.to_string();
        if s.contains(&name) { Ok(()) } else { Err(format!("{what} error does not name the file: {s}")) }
    };
    if let Err(e) = from_bytes(bytes, path) {
        named("from_bytes", e)?;
    }
    std::fs::write(path, bytes).map_err(|e| e.to_string())?;
    if let Err(e) = read_metadata(path) {
        named("read_metadata", e)?;
    }
    Ok(())
}

#[test]
fn safetensors_arbitrary_bytes() {
    isolated("safetensors_arbitrary_bytes", || {
        let (_dir, path) = scratch("case.safetensors");
        run_cases("safetensors_arbitrary_bytes", 300, arbitrary_bytes(512), |b| check_safetensors(&b, &path));
        // A plausible length prefix, then arbitrary JSON-ish text.
        let framed = "[{}\\[\\]\":,a-zA-Z0-9_ ]{0,200}"
            .prop_map(|h: String| [&(h.len() as u64).to_le_bytes()[..], h.as_bytes(), &[0u8; 32]].concat());
        run_cases("safetensors_framed_text", 300, framed, |b| check_safetensors(&b, &path));
    });
}

#[test]
fn safetensors_mutated_seeds() {
    isolated("safetensors_mutated_seeds", || {
        let (_dir, path) = scratch("case.safetensors");
        run_cases("safetensors_mutated_seeds", 500, mutated(safetensors_seeds()), |b| check_safetensors(&b, &path));
    });
}

/// Header JSON with boundary shapes and offsets (found: a shape whose product overflows i64 panicked).
#[test]
fn safetensors_header_fields() {
    isolated("safetensors_header_fields", || {
        let (_dir, path) = scratch("case.safetensors");
        let dim =
            prop_oneof![Just(0i64), Just(1), Just(-1), Just(1 << 31), Just(1 << 62), Just(i64::MAX), any::<i64>()];
        let off = prop_oneof![Just(0u64), Just(4), Just(16), Just(u64::MAX), Just(1 << 63), any::<u64>()];
        let dtype = prop_oneof![Just("F32"), Just("F64"), Just("I64"), Just("")];
        let header =
            (proptest::collection::vec(dim, 0..5), off.clone(), off, dtype).prop_map(|(shape, a, b, dtype)| {
                let h = serde_json::json!({"t": {"dtype": dtype, "shape": shape, "data_offsets": [a, b]}}).to_string();
                [&(h.len() as u64).to_le_bytes()[..], h.as_bytes(), &[0u8; 16]].concat()
            });
        run_cases("safetensors_header_fields", 400, header, |b| check_safetensors(&b, &path));
    });
}

/// Found by `safetensors_header_fields`: a shape whose element count overflows i64 panicked (debug) in
/// `from_bytes`; with a 0 dimension beside huge ones it passed the size check and libtorch failed with an
/// unnamed "Stride calculation overflowed" and a C++ backtrace.
#[test]
fn safetensors_shape_overflow_is_an_error() {
    for shape in ["[4611686018427387904,4]", "[0,2147483648,4611686018427387904]"] {
        let h = format!(r#"{{"t":{{"dtype":"F32","shape":{shape},"data_offsets":[0,0]}}}}"#);
        let bytes = [&(h.len() as u64).to_le_bytes()[..], h.as_bytes()].concat();
        let e = from_bytes(&bytes, Path::new("overflow.safetensors")).unwrap_err().to_string();
        assert!(e.contains("overflow.safetensors") && e.contains("more elements than any file"), "{e}");
    }
}

#[test]
fn issue23_safetensors_truncated_header_names_the_lengths() {
    isolated("issue23_safetensors_truncated_header_names_the_lengths", || {
        let (_dir, path) = scratch("short.safetensors");
        let bytes = [&1000u64.to_le_bytes()[..], b"{\"a\":"].concat();
        std::fs::write(&path, &bytes).unwrap();
        for e in [read_metadata(&path).unwrap_err(), from_bytes(&bytes, &path).unwrap_err()] {
            let e = e.to_string();
            assert!(e.contains("1000"), "the error should give the declared header length (1000 bytes): {e}");
        }
    });
}
