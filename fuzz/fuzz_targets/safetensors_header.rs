//! safetensors: `weights::from_bytes` (whole buffer) and `weights::read_metadata` (header only, from a file).
#![no_main]

mod common;

use std::path::Path;

use diffuse_audio::weights::{from_bytes, read_metadata};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = from_bytes(data, Path::new("fuzz.safetensors"));
    let path = common::scratch("safetensors", data);
    let _ = read_metadata(&path);
});
