//! WAV: `wav::probe` and `wav::read_wav` on arbitrary bytes (from a file, as the CLI reads them).
#![no_main]

mod common;

use diffuse_audio::wav::{probe, read_wav};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch("wav", data);
    let _ = probe(&path);
    if let Ok(a) = read_wav(&path) {
        assert!(a.sample_rate > 0 && !a.is_empty());
        assert!(a.channels.iter().all(|c| c.len() == a.len() && c.iter().all(|s| s.is_finite())));
    }
});
