//! Model sidecars: the audio model's `ModelConfig::parse` and the TorchScript `ScriptSidecar::parse`.
#![no_main]

use std::path::Path;

use diffuse_audio::ModelConfig;
use diffuse_core::denoiser::ScriptSidecar;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = ScriptSidecar::parse(text, Path::new("fuzz.json"));
    let _ = ModelConfig::parse(text, Path::new("fuzz.json"));
});
