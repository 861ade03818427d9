//! Text targets: `exact::Target::from_json` (the `--target` of `diffuse text check`).
#![no_main]

use diffuse_discrete::exact::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(t) = Target::from_json(text) {
        let total: f64 = t.as_map().values().sum();
        assert!((total - 1.0).abs() < 1e-5, "accepted a target that sums to {total}");
    }
});
