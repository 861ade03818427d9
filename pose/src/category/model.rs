//! A category-level model: native safetensors weights of a [`PoseNet`] plus a JSON sidecar (`model.json` beside
//! `model.safetensors`) with its categories, network, chart scales, core path, crop and default sampler. Loading
//! validates the sidecar and the weights (exact names and shapes), with errors naming the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffuse_core::path::{NoisePath, PathSpec};
use diffuse_core::spacing::Spacing;
use diffuse_core::weights::named;
use nalgebra::{Point3, Vector3};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor, nn};

use super::Category;
use super::baseline::Plane;
use super::chart::ChartScales;
use super::metrics::SizedPose;
use super::net::{NetConfig, PoseNet};
use crate::error::{Error, Result};

/// The sidecar's `format` value.
pub const FORMAT: &str = "diffuse-pose-category-model";
/// The sidecar version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest sidecar read.
pub const MAX_SIDECAR_BYTES: u64 = 1 << 20;
/// Most hypotheses per estimate.
pub const MAX_HYPOTHESES: usize = 64;
/// Most sampling steps.
pub const MAX_STEPS: usize = 100;

/// How the model samples unless told otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerDefaults {
    /// A core solver name (`diffuse solvers list`).
    pub solver: String,
    /// Grid intervals (the last one a jump to the clean box).
    pub steps: usize,
    /// Spacing of the grid.
    pub spacing: Spacing,
    /// Hypotheses per estimate, started at evenly spaced turns about the vertical.
    pub hypotheses: usize,
}

impl Default for SamplerDefaults {
    fn default() -> Self {
        SamplerDefaults { solver: "ddim".into(), steps: 3, spacing: Spacing::Karras { rho: 7.0 }, hypotheses: 8 }
    }
}

/// The JSON sidecar of a category-level model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryModelConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// Sidecar version ([`VERSION`]).
    pub version: u32,
    /// The categories it knows, in the order of its one-hot input.
    pub categories: Vec<Category>,
    /// The network.
    pub network: NetConfig,
    /// What a unit of the state means.
    pub chart: ChartScales,
    /// The core path of the state (VE-type: the state is the clean box plus σ·ε in chart coordinates).
    pub path: PathSpec,
    /// Scan points within this many box sizes of the noisy box's centre (per axis) are fed to the network.
    pub crop: f64,
    /// Scan points less than this high above the table (metres) are dropped before the network sees the scan
    /// (the table's place reaches it through the conditioning instead).
    pub table_margin: f64,
    /// The default sampler.
    pub sampler: SamplerDefaults,
    /// How it was trained (command, recipe, time, machine).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl CategoryModelConfig {
    /// A sidecar for `categories` with the default network, chart, path and sampler.
    pub fn new(categories: Vec<Category>) -> Self {
        let network = NetConfig { categories: categories.len(), ..NetConfig::default() };
        CategoryModelConfig {
            format: FORMAT.into(),
            version: VERSION,
            categories,
            network,
            chart: ChartScales::default(),
            path: PathSpec::Edm { sigma_min: 0.02, sigma_max: 1.5 },
            crop: 1.0,
            table_margin: 0.004,
            sampler: SamplerDefaults::default(),
            training: serde_json::Value::Null,
        }
    }

    /// Checks every field; returns the path.
    pub fn validate(&self) -> Result<Arc<dyn NoisePath>> {
        if self.format != FORMAT || self.version != VERSION {
            return Err(Error::invalid(
                "sidecar",
                format!(
                    "format '{}' version {} is not a category-level pose model ('{FORMAT}' version {VERSION})",
                    self.format, self.version
                ),
            ));
        }
        let mut seen = self.categories.clone();
        seen.dedup();
        if self.categories.is_empty() || seen.len() != self.categories.len() {
            return Err(Error::invalid("sidecar", "categories must be a non-empty list without repeats"));
        }
        if !self.network.is_valid() || self.network.categories != self.categories.len() {
            return Err(Error::invalid("sidecar", "network sizes out of range or not matching the categories"));
        }
        let crop_ok = self.crop > 0.0 && self.crop <= 10.0;
        if !(self.chart.is_valid() && crop_ok && (0.0..1.0).contains(&self.table_margin)) {
            return Err(Error::invalid(
                "sidecar",
                "chart scales must be positive, crop in (0, 10] and table_margin in [0, 1) m",
            ));
        }
        let s = &self.sampler;
        if !(1..=MAX_STEPS).contains(&s.steps) || !(1..=MAX_HYPOTHESES).contains(&s.hypotheses) {
            return Err(Error::invalid(
                "sidecar",
                format!("sampler needs 1 to {MAX_STEPS} steps and 1 to {MAX_HYPOTHESES} hypotheses"),
            ));
        }
        diffuse_core::solvers::build_solver(&s.solver, &Default::default())?;
        Ok(self.path.build()?)
    }

    /// The position of `category` in the one-hot input, or an error listing the known ones.
    pub fn index_of(&self, category: Category) -> Result<usize> {
        self.categories.iter().position(|&c| c == category).ok_or_else(|| {
            let known: Vec<&str> = self.categories.iter().map(|c| c.name()).collect();
            Error::invalid("category", format!("this model knows {}, not '{category}'", known.join(", ")))
        })
    }
}

/// The sidecar path of a weights file: `model.safetensors` → `model.json`.
pub fn sidecar_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// The network's view of a scan from a box `hyp`: the points `diag(1/size)·Rᵀ·(p − t)` within `crop` per axis,
/// `n` of them drawn with `rng` (with repeats when fewer), appended to `out` as `n·3` floats. Returns how many
/// points were within the crop (none: `n` zeros).
pub fn box_view(
    scan: &[Point3<f64>],
    hyp: &SizedPose,
    crop: f64,
    n: usize,
    rng: &mut ChaCha8Rng,
    out: &mut Vec<f32>,
) -> usize {
    let inv = hyp.pose.inverse();
    let inside: Vec<Vector3<f64>> = scan
        .iter()
        .map(|p| (inv * p).coords.component_div(&hyp.size))
        .filter(|q| q.iter().all(|v| v.abs() <= crop))
        .collect();
    if inside.is_empty() {
        out.extend(std::iter::repeat_n(0.0, 3 * n));
        return 0;
    }
    let pick: Vec<usize> = if inside.len() >= n {
        rand::seq::index::sample(rng, inside.len(), n).into_vec()
    } else {
        (0..n).map(|i| if i < inside.len() { i } else { rng.random_range(0..inside.len()) }).collect()
    };
    for i in pick {
        out.extend(inside[i].iter().map(|&v| v as f32));
    }
    inside.len()
}

/// The conditioning of box `hyp` at noise level `sigma`: noise-level features, log-size (relative to 10 cm), unit
/// direction to the sensor and the table's normal in the box's frame, the box centre's height above the table in
/// box heights, one-hot category; appended to `out`.
pub fn box_condition(
    sigma: f64,
    hyp: &SizedPose,
    viewpoint: &Point3<f64>,
    table: &Plane,
    category: usize,
    categories: usize,
    out: &mut Vec<f32>,
) {
    let ls = sigma.max(1e-6).ln();
    out.extend([ls / 3.0, ls.sin(), ls.cos(), sigma].map(|v| v as f32));
    out.extend(hyp.size.map(|s| (s / 0.1).ln()).iter().map(|&v| v as f32));
    let to_sensor = hyp.pose.inverse() * viewpoint;
    let d = to_sensor.coords.try_normalize(1e-12).unwrap_or_else(Vector3::zeros);
    out.extend(d.iter().map(|&v| v as f32));
    let normal = hyp.pose.rotation.inverse() * table.normal;
    out.extend(normal.iter().map(|&v| v as f32));
    let centre = Point3::from(hyp.pose.translation.vector);
    out.push((table.height(&centre) / hyp.size.y.max(1e-6)) as f32);
    out.extend((0..categories).map(|c| if c == category { 1.0f32 } else { 0.0 }));
}

/// A category-level network with its sidecar.
#[derive(Debug)]
pub struct CategoryModel {
    vs: nn::VarStore,
    net: PoseNet,
    config: CategoryModelConfig,
    path: Arc<dyn NoisePath>,
}

impl CategoryModel {
    /// A freshly initialised model (seed the generator with `tch::manual_seed` for reproducible weights).
    pub fn new(config: CategoryModelConfig, device: Device) -> Result<Self> {
        let path = config.validate()?;
        let vs = nn::VarStore::new(device);
        let net = PoseNet::new(&vs.root(), &config.network);
        Ok(CategoryModel { vs, net, config, path })
    }

    /// Loads `weights` (`.safetensors`) and its sidecar (`.json` beside it).
    pub fn load(weights: &Path, device: Device) -> Result<Self> {
        let side = sidecar_path(weights);
        let text =
            diffuse_core::io::read_input(&side, MAX_SIDECAR_BYTES).map_err(|e| Error::model(&side, e.to_string()))?;
        let config = Self::parse_sidecar(&text, &side)?;
        let bytes = diffuse_core::io::read_input(weights, diffuse_core::weights::MAX_WEIGHTS_BYTES)?;
        Self::from_bytes(&bytes, config, weights, device)
    }

    /// Parses and validates a sidecar; errors name `name`.
    pub fn parse_sidecar(text: &[u8], name: &Path) -> Result<CategoryModelConfig> {
        let config: CategoryModelConfig = serde_json::from_slice(text)
            .map_err(|e| Error::model(name, format!("not a category-level pose model sidecar: {e}")))?;
        config.validate().map_err(|e| Error::model(name, e.to_string()))?;
        Ok(config)
    }

    /// A model from safetensors bytes and its sidecar (the embedded model); `name` stands for the file in errors.
    pub fn from_bytes(bytes: &[u8], config: CategoryModelConfig, name: &Path, device: Device) -> Result<Self> {
        let mut model = Self::new(config, device).map_err(|e| Error::model(name, e.to_string()))?;
        let core_err = |e: diffuse_core::Error| match e {
            diffuse_core::Error::File { path, reason } => Error::model(path, reason),
            other => other.into(),
        };
        let (tensors, _) = diffuse_core::weights::from_bytes(bytes, name).map_err(core_err)?;
        diffuse_core::nn::load_vars(&mut model.vs, tensors, name).map_err(core_err)?;
        Ok(model)
    }

    /// Writes the weights and the sidecar beside them, each atomically; existing files are kept unless `force`.
    pub fn save(&self, weights_path: &Path, force: bool) -> Result<()> {
        let bytes = diffuse_core::weights::to_bytes(&named(&self.vs), Default::default())?;
        let side = serde_json::to_vec_pretty(&self.config).map_err(|e| Error::invalid("sidecar", e.to_string()))?;
        diffuse_core::io::write_atomic(weights_path, force, |f| std::io::Write::write_all(f, &bytes))?;
        diffuse_core::io::write_atomic(&sidecar_path(weights_path), force, |f| std::io::Write::write_all(f, &side))?;
        Ok(())
    }

    /// The sidecar.
    pub fn config(&self) -> &CategoryModelConfig {
        &self.config
    }

    /// Mutable sidecar (training records its recipe).
    pub fn config_mut(&mut self) -> &mut CategoryModelConfig {
        &mut self.config
    }

    /// The core path of the state.
    pub fn path(&self) -> Arc<dyn NoisePath> {
        self.path.clone()
    }

    /// The variables (weights).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The correction `[B, 9]` for views `[B, N, 3]` and conditioning `[B, C]` (float32, on the model's device).
    pub fn forward(&self, views: &Tensor, condition: &Tensor) -> Result<Tensor> {
        self.net.forward(views, condition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> CategoryModel {
        let mut cfg = CategoryModelConfig::new(vec![Category::Bowl, Category::Box]);
        cfg.network = NetConfig { points: 32, point_widths: [8, 8, 8], head: 16, categories: 2, heading_bins: 4 };
        tch::manual_seed(1);
        CategoryModel::new(cfg, Device::Cpu).unwrap()
    }

    #[test]
    fn save_load_round_trip_and_bad_files_name_themselves() {
        let m = tiny();
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("m.safetensors");
        m.save(&w, false).unwrap();
        // Nothing is overwritten without force.
        assert!(m.save(&w, false).is_err());
        let back = CategoryModel::load(&w, Device::Cpu).unwrap();
        assert_eq!(back.config(), m.config());
        let v = Tensor::randn([2, 32, 3], (tch::Kind::Float, Device::Cpu));
        let c = Tensor::randn([2, 16], (tch::Kind::Float, Device::Cpu));
        // The output layer starts at zero; perturb nothing, compare the hidden path through a trained-like input.
        let (a, b) = (m.forward(&v, &c).unwrap(), back.forward(&v, &c).unwrap());
        assert_eq!(Vec::<f32>::try_from(a.flatten(0, -1)).unwrap(), Vec::<f32>::try_from(b.flatten(0, -1)).unwrap());
        // A sidecar of another kind, or a broken one, is refused naming the file.
        let side = sidecar_path(&w);
        std::fs::write(&side, br#"{"format": "diffuse-restoration-model", "version": 1}"#).unwrap();
        let e = CategoryModel::load(&w, Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("m.json") && e.contains("category-level pose model"), "{e}");
        let mut cfg = m.config().clone();
        cfg.network.head = 32;
        std::fs::write(&side, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let e = CategoryModel::load(&w, Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("m.safetensors") && e.contains("shape"), "{e}");
        let mut cfg = m.config().clone();
        cfg.categories = vec![Category::Bowl, Category::Bowl];
        assert!(cfg.validate().unwrap_err().to_string().contains("repeats"));
    }

    #[test]
    fn unknown_categories_list_the_known_ones() {
        let e = tiny().config().index_of(Category::Mug).unwrap_err().to_string();
        assert!(e.contains("bowl, box") && e.contains("'mug'"), "{e}");
    }

    #[test]
    fn the_view_is_the_scan_in_the_box_frame_cropped() {
        let hyp = SizedPose {
            pose: crate::se3::pose(nalgebra::Rotation3::identity(), Vector3::new(1.0, 0.0, 0.0)),
            size: Vector3::new(0.5, 1.0, 2.0),
        };
        let scan = vec![Point3::new(1.25, 0.5, -1.0), Point3::new(5.0, 0.0, 0.0)];
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let mut out = Vec::new();
        assert_eq!(box_view(&scan, &hyp, 1.0, 3, &mut rng, &mut out), 1);
        assert_eq!(out, vec![0.5, 0.5, -0.5, 0.5, 0.5, -0.5, 0.5, 0.5, -0.5]);
        let mut cond = Vec::new();
        let table = Plane { normal: Vector3::y(), offset: -0.5 };
        box_condition(0.5, &hyp, &Point3::origin(), &table, 1, 2, &mut cond);
        assert_eq!(cond.len(), 16);
        // Sensor towards −x, table normal +y, the centre one box height above the table, category 1 of 2.
        assert_eq!(&cond[7..16], &[-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.0, 1.0]);
    }
}
