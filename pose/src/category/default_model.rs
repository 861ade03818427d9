//! The shipped category-level model (bottle, bowl, can, mug, box, laptop), compiled into the library (feature
//! `default-models`, on by default) so that `diffuse pose estimate scan.ply --category mug` works without a
//! download. It was trained by `diffuse pose train` on procedural scans; its sidecar (pose/models/category.json)
//! holds the exact command, the time it took and the machine.

use std::path::Path;

use tch::Device;

use super::model::{CategoryModel, CategoryModelConfig};
use crate::error::Result;

/// How the built-in model is named in messages.
pub const NAME: &str = "builtin:category";

#[cfg(feature = "default-models")]
fn files() -> Option<(&'static [u8], &'static str)> {
    Some((include_bytes!("../../models/category.safetensors"), include_str!("../../models/category.json")))
}

#[cfg(not(feature = "default-models"))]
fn files() -> Option<(&'static [u8], &'static str)> {
    None
}

/// The built-in model's sidecar.
pub fn config() -> Result<CategoryModelConfig> {
    let (_, sidecar) = files().ok_or_else(missing)?;
    CategoryModel::parse_sidecar(sidecar.as_bytes(), Path::new(NAME))
}

/// Loads the built-in model onto `device`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use diffuse_pose::category::{Category, default_model, estimate::CategoryOptions, scene, shapes};
/// let model = default_model::load(tch::Device::Cpu)?;
/// // A scan of a mug on a table, seen from the origin (metres).
/// let scan = scene::make_scene(&shapes::instance(Category::Mug, 7), 1, &Default::default())?.scan;
/// let est = model.estimate(&scan, &Default::default(), Category::Mug, &CategoryOptions::default())?;
/// println!("size {:?} m, pose {:?}", est.best.size, est.best.pose);
/// # Ok(()) }
/// ```
pub fn load(device: Device) -> Result<CategoryModel> {
    let (weights, _) = files().ok_or_else(missing)?;
    CategoryModel::from_bytes(weights, config()?, Path::new(NAME), device)
}

fn missing() -> crate::error::Error {
    crate::error::Error::model(
        NAME,
        "this build has no built-in category model (feature `default-models` is off); pass --model",
    )
}

#[cfg(all(test, feature = "default-models"))]
mod tests {
    use super::*;
    use crate::category::bench::{CategoryBenchConfig, CategoryMethod, run};
    use crate::category::{CATEGORIES, Category};

    #[test]
    fn the_built_in_model_loads_is_small_and_says_how_it_was_trained() {
        let (weights, _) = files().unwrap();
        assert!(weights.len() < 25 << 20, "{} bytes", weights.len());
        let cfg = config().unwrap();
        assert_eq!(cfg.categories, CATEGORIES.to_vec());
        for key in ["command", "machine", "seconds", "recipe", "data"] {
            assert!(!cfg.training[key].is_null(), "sidecar lacks training.{key}");
        }
        load(Device::Cpu).unwrap();
    }

    #[test]
    fn the_built_in_model_beats_the_pca_box_where_the_heading_matters() {
        // Validation instances (never trained on, not the test set), 4 per category with a heading.
        let cfg = CategoryBenchConfig {
            categories: vec![Category::Mug, Category::Box, Category::Laptop],
            cases: 4,
            validation: true,
            ..CategoryBenchConfig::default()
        };
        let model = load(Device::Cpu).unwrap();
        let report = run(&cfg, Some(&model), &mut |_| {}).unwrap();
        let all = |m: CategoryMethod| report.summaries.iter().find(|(x, c, _)| *x == m && c == "all").unwrap().2;
        let (pca, ours) = (all(CategoryMethod::PcaBox), all(CategoryMethod::Diffusion));
        assert!(ours.deg10_cm5 >= pca.deg10_cm5 + 0.25, "{ours:?} vs {pca:?}");
        assert!(ours.mean_rotation_deg < 0.5 * pca.mean_rotation_deg, "{ours:?} vs {pca:?}");
    }
}
