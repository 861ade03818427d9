//! Pose and size of a mug nobody scanned before, from a depth camera's points, with the built-in category-level
//! model: `cargo run --release -p diffuse-pose --example category [SCAN.ply]`.
//!
//! Without an argument it makes a scan of a procedural mug on a table; the points enter as `Vec<[f32; 3]>`, as
//! they would from a sensor driver (metres, in the camera's frame).

use diffuse_pose::PointCloud;
use diffuse_pose::category::{Category, default_model, estimate::CategoryOptions, scene, shapes};
use diffuse_pose::nalgebra::{Point3, Vector3};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let points: Vec<[f32; 3]> = match std::env::args().nth(1) {
        Some(path) => diffuse_pose::ply::read_ply(std::path::Path::new(&path))?.cloud.to_f32(),
        None => scene::make_scene(&shapes::instance(Category::Mug, 7), 1, &Default::default())?.scan.to_f32(),
    };

    let model = default_model::load(tch::Device::Cpu)?;
    let scan = PointCloud::from_f32(&points);
    let sensor = Point3::origin();
    let est = model.estimate(&scan, &sensor, Category::Mug, &CategoryOptions::default())?;

    let (r, t, s) = (est.best.pose.rotation, est.best.pose.translation.vector, est.best.size);
    let up = r * Vector3::y();
    println!("mug centre {:.3?} m, size {:.3?} m, up axis {:.3?}", t.as_slice(), s.as_slice(), up.as_slice());
    for corner in est.best.corners() {
        println!("  box corner {:.3?}", corner.coords.as_slice());
    }
    Ok(())
}
