//! PLY: `ply::read_ply_bytes`, then `PlyData::model_cloud` as `diffuse pose estimate --object` does.
#![no_main]

use std::path::Path;

use diffuse_pose::ply::read_ply_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ply) = read_ply_bytes(data, Path::new("fuzz.ply")) {
        let n = ply.cloud.points.len();
        assert!(ply.triangles.iter().flatten().all(|&k| (k as usize) < n));
        let _ = ply.model_cloud("fuzz.ply", 200, 0);
    }
});
