//! Solver problem files: `bench::Problem::load` (the `--problem` of `diffuse solvers bench`).
#![no_main]

mod common;

use diffuse_core::bench::Problem;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch("json", data);
    if let Ok(p) = Problem::load(&path) {
        let _ = p.grid();
    }
});
