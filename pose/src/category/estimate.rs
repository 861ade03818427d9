//! Category-level pose and size with the learned model: the reverse diffusion of a box, run by core's solver.
//!
//! 1. The table (RANSAC plane), the scan points above it, and a start: the PCA box on the supporting plane
//!    ([`super::baseline::pca_box`]), turned about the table's normal to `hypotheses` evenly spaced headings (the
//!    PCA heading of a mug or laptop is often the wrong way round, and that of a bowl means nothing).
//! 2. Each start is the base of a chart ([`super::chart`]); the state, 9 coordinates per hypothesis, starts at the
//!    base (x_T = 0 at σ_max: the start counts as a draw of the noisy box) and core's solver walks the path to
//!    σ = 0, asking the network at each step for the clean box given the scan seen from the current one (a
//!    data prediction, converted to the base's chart exactly).
//! 3. The hypotheses are scored by their agreement: the one with the smallest summed (capped) symmetry-aware
//!    distance to the others wins; its support is the fraction of hypotheses within 5° and 2 cm of it (a mug
//!    whose handle is hidden has no heading to agree on, so its support is low).

use std::cell::{Cell, RefCell};

use diffuse_core::denoiser::{Conditioning, Denoiser};
use diffuse_core::seed::sample_seed;
use diffuse_core::solvers::{Budget, NoNoise, SolverOptions, build_solver, sample};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use diffuse_core::{Parameterization, Prediction};
use nalgebra::{Point3, Rotation3, Vector3};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::baseline::{Plane, above_plane, pca_box_on, support_plane};
use super::chart::{DIM, local, retract};
use super::metrics::SizedPose;
use super::model::{CategoryModel, MAX_HYPOTHESES, MAX_STEPS, box_condition, box_view};
use super::net::bin_centre;
use super::{Category, CategorySymmetry};
use crate::cloud::PointCloud;
use crate::error::{Error, Result};
use crate::se3;

/// Fewest scan points an estimate accepts.
pub const MIN_SCAN_POINTS: usize = 64;
/// Fewest scan points above the table an estimate accepts.
pub const MIN_OBJECT_POINTS: usize = 32;

/// How to sample; `None` fields take the model's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CategoryOptions {
    /// Core solver.
    pub solver: Option<String>,
    /// Grid intervals.
    pub steps: Option<usize>,
    /// Grid spacing.
    pub spacing: Option<Spacing>,
    /// Hypotheses.
    pub hypotheses: Option<usize>,
    /// How the answer is chosen among the hypotheses.
    pub choice: Choice,
    /// Seed of the point subsampling.
    pub seed: u64,
}

/// How the answer is chosen among the hypotheses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Choice {
    /// The one that agrees best with the others.
    #[default]
    Agreement,
    /// The one whose heading the network was surest of at the last step.
    Confidence,
}

impl std::str::FromStr for Choice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "agreement" => Ok(Choice::Agreement),
            "confidence" => Ok(Choice::Confidence),
            _ => Err(Error::invalid("choice", format!("'{s}' is not agreement or confidence"))),
        }
    }
}

/// A category-level estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryEstimate {
    /// The chosen box: pose canonical → scan frame and size `[w, h, d]`.
    pub best: SizedPose,
    /// Every hypothesis's final box.
    pub hypotheses: Vec<SizedPose>,
    /// Index of the chosen hypothesis.
    pub chosen: usize,
    /// Fraction of hypotheses within 5° and 2 cm of the chosen one (symmetry-aware).
    pub support: f64,
    /// The PCA box the hypotheses started from.
    pub start: SizedPose,
    /// Network evaluations (batched over hypotheses).
    pub nfe: usize,
    /// Per hypothesis, the network's probability of its heading bin at the last step.
    pub confidence: Vec<f64>,
}

/// How far apart two boxes are: the symmetry-aware rotation angle (degrees) and the distance between centres (cm).
fn apart(a: &SizedPose, b: &SizedPose, symmetry: CategorySymmetry) -> (f64, f64) {
    let (ra, rb) = (a.pose.rotation, b.pose.rotation);
    let rot = match symmetry {
        CategorySymmetry::AboutY => (ra * Vector3::y()).dot(&(rb * Vector3::y())).clamp(-1.0, 1.0).acos(),
        CategorySymmetry::HalfTurnY => {
            let half = Rotation3::from_axis_angle(&Vector3::y_axis(), std::f64::consts::PI);
            crate::so3::distance(&ra, &rb).min(crate::so3::distance(&ra, &(rb * half)))
        }
        CategorySymmetry::None => crate::so3::distance(&ra, &rb),
    };
    (rot.to_degrees(), 100.0 * (a.pose.translation.vector - b.pose.translation.vector).norm())
}

/// The disagreement used to score hypotheses: degrees / 5 + centimetres / 2, capped at 10.
fn disagreement(a: &SizedPose, b: &SizedPose, symmetry: CategorySymmetry) -> f64 {
    let (deg, cm) = apart(a, b, symmetry);
    (deg / 5.0 + cm / 2.0).min(10.0)
}

/// The network as a core denoiser over the chart coordinates of a batch of hypotheses, one base each.
struct ChartDenoiser<'a> {
    model: &'a CategoryModel,
    object: &'a [Point3<f64>],
    table: Plane,
    viewpoint: Point3<f64>,
    bases: Vec<SizedPose>,
    category: usize,
    seed: u64,
    calls: Cell<u64>,
    confidence: RefCell<Vec<f64>>,
}

impl ChartDenoiser<'_> {
    fn predict_boxes(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let cfg = self.model.config();
        let sigma = self.model.path().point(t).sigma;
        let z: Vec<f64> = Vec::<f64>::try_from(x.f_to_kind(Kind::Double)?.f_flatten(0, -1)?)?;
        let n = cfg.network.points;
        let call = self.calls.get();
        self.calls.set(call + 1);
        let (mut views, mut conds, mut hyps) = (Vec::new(), Vec::new(), Vec::new());
        for (k, base) in self.bases.iter().enumerate() {
            let zk: [f64; DIM] = std::array::from_fn(|i| z[k * DIM + i]);
            let hyp = retract(base, &zk, &cfg.chart);
            let mut rng = ChaCha8Rng::seed_from_u64(sample_seed(self.seed, call * MAX_HYPOTHESES as u64 + k as u64));
            box_view(self.object, &hyp, cfg.crop, n, &mut rng, &mut views);
            box_condition(sigma, &hyp, &self.viewpoint, &self.table, self.category, cfg.categories.len(), &mut conds);
            hyps.push(hyp);
        }
        let b = self.bases.len() as i64;
        let device = self.model.var_store().device();
        let views = Tensor::f_from_slice(&views)?.f_view([b, n as i64, 3])?.f_to_device(device)?;
        let conds = Tensor::f_from_slice(&conds)?.f_view([b, -1])?.f_to_device(device)?;
        let out = {
            let _guard = tch::no_grad_guard();
            self.model.forward(&views, &conds)?
        };
        let nbins = cfg.network.heading_bins;
        let width = DIM + nbins;
        let raw: Vec<f64> =
            Vec::<f64>::try_from(out.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?.f_flatten(0, -1)?)?;
        let mut x0 = Vec::with_capacity(self.bases.len() * DIM);
        for (k, (base, hyp)) in self.bases.iter().zip(&hyps).enumerate() {
            let row = &raw[k * width..(k + 1) * width];
            let mut dk: [f64; DIM] = std::array::from_fn(|i| row[i]);
            let logits = &row[DIM..];
            // The first of the largest logits (an untrained network's zeros pick bin 0: no turn).
            let bin = (0..nbins).fold(0, |best, i| if logits[i] > logits[best] { i } else { best });
            let total: f64 = logits.iter().map(|l| (l - logits[bin]).exp()).sum();
            self.confidence.borrow_mut()[k] = 1.0 / total;
            dk[1] = (bin_centre(bin, nbins) + dk[1] * cfg.chart.yaw) / cfg.chart.yaw;
            let clean = retract(hyp, &dk, &cfg.chart);
            x0.extend(local(base, &clean, &cfg.chart));
        }
        Ok(Tensor::f_from_slice(&x0)?.f_view([b, DIM as i64])?.f_to_kind(x.kind())?.f_to_device(x.device())?)
    }
}

impl Denoiser for ChartDenoiser<'_> {
    fn parameterization(&self) -> Parameterization {
        Parameterization::Data
    }

    fn predict(&self, x: &Tensor, t: f64, _cond: &Conditioning) -> diffuse_core::Result<Prediction> {
        self.predict_boxes(x, t)
            .map(Prediction::Data)
            .map_err(|e| diffuse_core::Error::invalid("category model", e.to_string()))
    }
}

impl CategoryModel {
    /// The pose and size of the `category` object standing on a table in `scan` (a single view; the sensor at
    /// `viewpoint`, in the scan's frame and units of metres).
    pub fn estimate(
        &self,
        scan: &PointCloud,
        viewpoint: &Point3<f64>,
        category: Category,
        opts: &CategoryOptions,
    ) -> Result<CategoryEstimate> {
        let cfg = self.config();
        let index = cfg.index_of(category)?;
        scan.validate("scan", MIN_SCAN_POINTS)?;
        let solver_name = opts.solver.clone().unwrap_or_else(|| cfg.sampler.solver.clone());
        let steps = opts.steps.unwrap_or(cfg.sampler.steps);
        let hypotheses = opts.hypotheses.unwrap_or(cfg.sampler.hypotheses);
        diffuse_core::limits::at_most("steps", steps, MAX_STEPS)?;
        diffuse_core::limits::at_most("hypotheses", hypotheses, MAX_HYPOTHESES)?;
        if steps == 0 || hypotheses == 0 {
            return Err(Error::invalid("sampler", "needs at least one step and one hypothesis"));
        }
        let table = support_plane(&scan.points, viewpoint, opts.seed)?;
        let start = pca_box_on(scan, &table, category)?;
        let object = above_plane(&scan.points, &table, cfg.table_margin);
        if object.len() < MIN_OBJECT_POINTS {
            return Err(Error::TooFewPoints {
                what: "scan".into(),
                have: object.len(),
                need: MIN_OBJECT_POINTS,
                context: format!(" more than {} mm above its table", 1e3 * cfg.table_margin),
            });
        }
        let bases: Vec<SizedPose> = (0..hypotheses)
            .map(|k| {
                let turn = Rotation3::from_axis_angle(
                    &Vector3::y_axis(),
                    std::f64::consts::TAU * k as f64 / hypotheses as f64,
                );
                SizedPose { pose: start.pose * se3::pose(turn, Vector3::zeros()), size: start.size }
            })
            .collect();
        let denoiser = ChartDenoiser {
            model: self,
            object: &object,
            table,
            viewpoint: *viewpoint,
            bases: bases.clone(),
            category: index,
            seed: opts.seed,
            calls: Cell::new(0),
            confidence: RefCell::new(vec![0.0; hypotheses]),
        };
        let solver = build_solver(&solver_name, &SolverOptions::default())?;
        let grid = GridSpec::new(opts.spacing.clone().unwrap_or_else(|| cfg.sampler.spacing.clone()), End::Zero);
        let x = Tensor::f_zeros([hypotheses as i64, DIM as i64], (Kind::Double, tch::Device::Cpu))?;
        let path = self.path();
        let out = sample(
            solver.as_ref(),
            path.as_ref(),
            &denoiser,
            &Conditioning::none(),
            &x,
            &grid,
            Budget::Steps(steps),
            &mut NoNoise,
            &mut (),
        )?;
        let z: Vec<f64> = Vec::<f64>::try_from(out.x.f_flatten(0, -1)?)?;
        let finals: Vec<SizedPose> = bases
            .iter()
            .enumerate()
            .map(|(k, base)| retract(base, &std::array::from_fn(|i| z[k * DIM + i]), &cfg.chart))
            .collect();
        if finals
            .iter()
            .any(|f| !(f.size.iter().all(|s| s.is_finite()) && f.pose.translation.vector.iter().all(|v| v.is_finite())))
        {
            return Err(Error::Numerical { op: "category estimate", reason: "a hypothesis became non-finite".into() });
        }
        let symmetry = category.symmetry();
        let scores: Vec<f64> =
            finals.iter().map(|a| finals.iter().map(|b| disagreement(a, b, symmetry)).sum()).collect();
        let confidence = denoiser.confidence.borrow().clone();
        let chosen = match opts.choice {
            Choice::Agreement => (0..finals.len()).min_by(|&a, &b| scores[a].total_cmp(&scores[b])),
            Choice::Confidence => (0..finals.len()).max_by(|&a, &b| confidence[a].total_cmp(&confidence[b])),
        }
        .unwrap_or(0);
        let close = finals
            .iter()
            .filter(|b| {
                let (deg, cm) = apart(&finals[chosen], b, symmetry);
                deg <= 5.0 && cm <= 2.0
            })
            .count();
        Ok(CategoryEstimate {
            best: finals[chosen],
            support: close as f64 / finals.len() as f64,
            hypotheses: finals,
            chosen,
            start,
            nfe: out.nfe,
            confidence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::model::CategoryModelConfig;
    use crate::category::net::NetConfig;
    use crate::category::scene::{SceneConfig, make_scene};
    use crate::category::shapes::instance;

    fn tiny() -> CategoryModel {
        let mut cfg = CategoryModelConfig::new(vec![Category::Mug, Category::Box]);
        cfg.network = NetConfig { points: 32, point_widths: [8, 8, 8], head: 16, categories: 2, heading_bins: 4 };
        tch::manual_seed(2);
        CategoryModel::new(cfg, tch::Device::Cpu).unwrap()
    }

    #[test]
    fn an_untrained_model_returns_its_start_and_bad_input_is_refused() {
        // The output layer starts at zero ("no correction", heading bin 0): every hypothesis stays on its start.
        let m = tiny();
        let s = make_scene(&instance(Category::Box, 3), 4, &SceneConfig::default()).unwrap();
        let e = m.estimate(&s.scan, &Point3::origin(), Category::Box, &CategoryOptions::default()).unwrap();
        assert_eq!(e.hypotheses.len(), 8);
        assert_eq!(e.nfe, 3);
        for (k, h) in e.hypotheses.iter().enumerate() {
            let turn = crate::so3::distance(&h.pose.rotation, &e.start.pose.rotation).to_degrees();
            assert!((turn - 45.0 * k.min(8 - k) as f64).abs() < 1e-6, "{k}: {turn}");
            assert!((h.size - e.start.size).norm() < 1e-12);
        }
        // Two steps, two hypotheses: as asked.
        let opts = CategoryOptions { steps: Some(2), hypotheses: Some(2), ..Default::default() };
        let e = m.estimate(&s.scan, &Point3::origin(), Category::Box, &opts).unwrap();
        assert_eq!((e.nfe, e.hypotheses.len()), (2, 2));
        // A category the model does not know, too few points, no steps.
        let err = m.estimate(&s.scan, &Point3::origin(), Category::Can, &opts).unwrap_err().to_string();
        assert!(err.contains("mug, box") && err.contains("'can'"), "{err}");
        let few = PointCloud::new(s.scan.points[..20].to_vec());
        let err = m.estimate(&few, &Point3::origin(), Category::Box, &opts).unwrap_err().to_string();
        assert!(err.contains("20 point(s)") && err.contains("64"), "{err}");
        let none = CategoryOptions { steps: Some(0), ..Default::default() };
        assert!(m.estimate(&s.scan, &Point3::origin(), Category::Box, &none).is_err());
    }
}
