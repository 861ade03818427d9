//! The category-level benchmark behind `diffuse pose bench --category`: held-out procedural instances
//! ([`super::shapes::TEST_SEEDS`] on; or, to choose settings, validation instances that training never saw),
//! each scanned once on its table ([`super::scene`]), scored with the NOCS measures ([`super::metrics`]) for the
//! PCA-box baseline and, when a model is given, the learned model, side by side on the same scans. Every case
//! is seeded by its index, so results repeat exactly.

use std::time::Instant;

use diffuse_core::seed::sample_seed;
use nalgebra::Point3;

use super::baseline::pca_box;
use super::estimate::CategoryOptions;
use super::metrics::{CategoryErrors, CategorySummary, SizedPose, category_errors, summarize};
use super::model::CategoryModel;
use super::scene::{SceneConfig, make_scene};
use super::shapes::{TEST_SEEDS, instance};
use super::train::VALIDATION_SEEDS;
use super::{CATEGORIES, Category};
use crate::error::Result;

/// Settings of the benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryBenchConfig {
    /// The categories to run.
    pub categories: Vec<Category>,
    /// Cases (held-out instances, one scan each) per category.
    pub cases: usize,
    /// Seed of the scans.
    pub seed: u64,
    /// How the scans are made.
    pub scene: SceneConfig,
    /// Validation instances instead of the held-out test instances (for choosing settings).
    pub validation: bool,
    /// The learned model's sampler settings.
    pub options: CategoryOptions,
}

/// Where the benchmark's validation instances start (after those training validates on).
pub const BENCH_VALIDATION_SEEDS: u64 = VALIDATION_SEEDS + (1 << 20);

impl Default for CategoryBenchConfig {
    fn default() -> Self {
        CategoryBenchConfig {
            categories: CATEGORIES.to_vec(),
            cases: 20,
            seed: 0,
            scene: SceneConfig::default(),
            validation: false,
            options: CategoryOptions::default(),
        }
    }
}

/// Which estimator produced a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CategoryMethod {
    /// The PCA oriented bounding box on the supporting plane ([`pca_box`]).
    PcaBox,
    /// The learned model ([`CategoryModel::estimate`]).
    Diffusion,
}

impl CategoryMethod {
    /// Name in reports.
    pub fn label(&self) -> &'static str {
        match self {
            CategoryMethod::PcaBox => "pca-box",
            CategoryMethod::Diffusion => "diffusion",
        }
    }
}

/// One estimate on one case.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CategoryCase {
    /// The category.
    pub category: Category,
    /// Index of the case among all cases of the run.
    pub index: usize,
    /// The estimator.
    pub method: CategoryMethod,
    /// Its errors (an estimator that fails on a scan scores IoU 0, 180° and 1 m).
    pub errors: CategoryErrors,
    /// The failure, if it failed.
    pub failure: Option<String>,
    /// Wall-clock time (ms).
    pub time_ms: f64,
    /// For a mug: whether its handle shows.
    pub handle_visible: Option<bool>,
}

/// Results and summaries (per method: each category, then "all").
#[derive(Debug, Clone)]
pub struct CategoryReport {
    /// Every case in run order.
    pub results: Vec<CategoryCase>,
    /// `(method, category or "all", summary)`.
    pub summaries: Vec<(CategoryMethod, String, CategorySummary)>,
}

/// The instance seed of case `index`.
pub fn instance_seed(cfg: &CategoryBenchConfig, index: usize) -> u64 {
    (if cfg.validation { BENCH_VALIDATION_SEEDS } else { TEST_SEEDS }) + index as u64
}

/// Runs the benchmark (with `model`, the learned model beside the baseline); `on_result` sees each result as it
/// is made.
pub fn run(
    cfg: &CategoryBenchConfig,
    model: Option<&CategoryModel>,
    on_result: &mut dyn FnMut(&CategoryCase),
) -> Result<CategoryReport> {
    diffuse_core::limits::at_most("cases per category", cfg.cases, crate::bench::MAX_CASES)?;
    if let Some(m) = model {
        for &c in &cfg.categories {
            m.config().index_of(c)?;
        }
    }
    let mut methods = vec![CategoryMethod::PcaBox];
    if model.is_some() {
        methods.push(CategoryMethod::Diffusion);
    }
    let mut results = Vec::new();
    for (ci, &category) in cfg.categories.iter().enumerate() {
        for c in 0..cfg.cases {
            let index = ci * cfg.cases + c;
            let inst = instance(category, instance_seed(cfg, index));
            let scene = make_scene(&inst, sample_seed(cfg.seed, index as u64), &cfg.scene)?;
            let truth = SizedPose { pose: scene.truth, size: scene.size };
            for &method in &methods {
                let t = Instant::now();
                let est = match (method, model) {
                    (CategoryMethod::Diffusion, Some(m)) => {
                        let opts = CategoryOptions { seed: index as u64, ..cfg.options.clone() };
                        m.estimate(&scene.scan, &Point3::origin(), category, &opts).map(|e| e.best)
                    }
                    _ => pca_box(&scene.scan, &Point3::origin(), category, index as u64),
                };
                let time_ms = t.elapsed().as_secs_f64() * 1e3;
                let (errors, failure) = match est {
                    Ok(e) => (category_errors(&e, &truth, category.symmetry(), scene.handle_visible), None),
                    Err(e) => {
                        (CategoryErrors { iou: 0.0, rotation_deg: 180.0, translation_m: 1.0 }, Some(e.to_string()))
                    }
                };
                let r = CategoryCase {
                    category,
                    index,
                    method,
                    errors,
                    failure,
                    time_ms,
                    handle_visible: scene.handle_visible,
                };
                on_result(&r);
                results.push(r);
            }
        }
    }
    let mut summaries = Vec::new();
    for &m in &methods {
        let pick = |f: &dyn Fn(&CategoryCase) -> bool| -> Vec<(CategoryErrors, f64)> {
            results.iter().filter(|r| r.method == m && f(r)).map(|r| (r.errors, r.time_ms)).collect()
        };
        for &c in &cfg.categories {
            summaries.push((m, c.name().to_string(), summarize(&pick(&|r| r.category == c))));
        }
        summaries.push((m, "all".into(), summarize(&pick(&|_| true))));
    }
    Ok(CategoryReport { results, summaries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_runs_every_category_and_summarises() {
        let cfg = CategoryBenchConfig { cases: 2, ..CategoryBenchConfig::default() };
        let mut seen = 0;
        let report = run(&cfg, None, &mut |_| seen += 1).unwrap();
        assert_eq!(seen, 12);
        assert_eq!(report.summaries.len(), 7);
        let all = &report.summaries[6];
        assert_eq!((all.1.as_str(), all.2.cases), ("all", 12));
        // The baseline finds the table and boxes most objects roughly.
        assert!(all.2.iou25 >= 0.5, "{:?}", all.2);
        assert!(report.results.iter().all(|r| r.failure.is_none()), "{:?}", report.results);
    }
}
