//! Paths described in JSON (problem files, model sidecars): `{"kind": "edm", "sigma_min": 0.002, …}`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::*;
use crate::Result;

/// Largest step count of a table path built from a description (trained tables have 1000 or fewer).
pub const MAX_TABLE_STEPS: usize = 1_000_000;

/// A serializable description of a path; [`PathSpec::build`] makes the path. Omitted fields take the
/// reference defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PathSpec {
    /// [`VpLinear`].
    #[serde(alias = "vp", alias = "vp-linear")]
    VpLinear {
        /// β(0).
        #[serde(default = "d_beta_min")]
        beta_min: f64,
        /// β(1).
        #[serde(default = "d_beta_max")]
        beta_max: f64,
        /// Smallest sampling time.
        #[serde(default = "d_t_min")]
        t_min: f64,
    },
    /// [`VpCosine`].
    #[serde(alias = "vp-cosine", alias = "cosine")]
    VpCosine {
        /// Offset s.
        #[serde(default = "d_cos_s")]
        s: f64,
        /// Smallest sampling time.
        #[serde(default = "d_t_min")]
        t_min: f64,
        /// Largest sampling time (dpm-solver: 0.9946).
        #[serde(default = "d_cos_t_max")]
        t_max: f64,
    },
    /// [`VpTable`] from a named β schedule or explicit betas.
    #[serde(alias = "discrete", alias = "vp-table")]
    VpTable {
        /// The β schedule (ignored when `betas` is given).
        #[serde(default = "d_schedule")]
        schedule: BetaSchedule,
        /// Number of steps N.
        #[serde(default = "d_steps")]
        steps: usize,
        /// An explicit β table.
        #[serde(default)]
        betas: Option<Vec<f64>>,
    },
    /// [`SubVp`].
    #[serde(alias = "sub-vp", alias = "subvp")]
    SubVp {
        /// β(0).
        #[serde(default = "d_beta_min")]
        beta_min: f64,
        /// β(1).
        #[serde(default = "d_beta_max")]
        beta_max: f64,
        /// Smallest sampling time.
        #[serde(default = "d_t_min")]
        t_min: f64,
    },
    /// [`Ve`].
    Ve {
        /// σ(0).
        #[serde(default = "d_ve_min")]
        sigma_min: f64,
        /// σ(1).
        #[serde(default = "d_ve_max")]
        sigma_max: f64,
        /// Smallest sampling time.
        #[serde(default = "d_ve_t_min")]
        t_min: f64,
    },
    /// [`Edm`].
    Edm {
        /// Smallest σ.
        #[serde(default = "d_edm_min")]
        sigma_min: f64,
        /// Largest σ.
        #[serde(default = "d_edm_max")]
        sigma_max: f64,
    },
    /// [`RectifiedFlow`].
    #[serde(alias = "flow", alias = "rectified-flow", alias = "rf")]
    RectifiedFlow {
        /// Smallest sampling time.
        #[serde(default = "d_t_min")]
        t_min: f64,
        /// Largest sampling time (1: pure noise, α = 0).
        #[serde(default = "d_one")]
        t_max: f64,
    },
    /// [`Ouve`].
    Ouve {
        /// Stiffness θ.
        #[serde(default = "d_theta")]
        theta: f64,
        /// σmin.
        #[serde(default = "d_ouve_min")]
        sigma_min: f64,
        /// σmax.
        #[serde(default = "d_ouve_max")]
        sigma_max: f64,
        /// Smallest sampling time.
        #[serde(default = "d_ouve_eps")]
        t_eps: f64,
        /// T.
        #[serde(default = "d_one")]
        t_max: f64,
    },
    /// [`Sbve`].
    Sbve {
        /// Stiffness k.
        #[serde(default = "d_sb_k")]
        k: f64,
        /// Diffusion c.
        #[serde(default = "d_sb_c")]
        c: f64,
        /// Smallest sampling time.
        #[serde(default = "d_sb_eps")]
        t_eps: f64,
    },
    /// [`IrSde`].
    #[serde(alias = "ir-sde", alias = "irsde")]
    IrSde {
        /// θ schedule.
        #[serde(default = "d_theta_schedule")]
        schedule: ThetaSchedule,
        /// Number of steps T.
        #[serde(default = "d_ir_steps")]
        steps: usize,
        /// Stationary std (≥ 1: on the 0–255 scale).
        #[serde(default = "d_ir_sigma")]
        max_sigma: f64,
        /// α at T.
        #[serde(default = "d_ir_eps")]
        eps: f64,
    },
    /// [`Rddm`].
    Rddm {
        /// Number of steps T.
        #[serde(default = "d_steps")]
        steps: usize,
        /// β̄(1)².
        #[serde(default = "d_sum_scale")]
        sum_scale: f64,
    },
    /// [`Resfusion`].
    Resfusion {
        /// "linear_pro" or "cosine_pro".
        #[serde(default = "d_res_schedule")]
        schedule: String,
        /// Number of steps of the underlying table.
        #[serde(default = "d_res_steps")]
        steps: usize,
    },
}

impl PathSpec {
    /// The valid `kind` names.
    pub const KINDS: &'static [&'static str] = &[
        "vp_linear",
        "vp_cosine",
        "vp_table",
        "sub_vp",
        "ve",
        "edm",
        "rectified_flow",
        "ouve",
        "sbve",
        "ir_sde",
        "rddm",
        "resfusion",
    ];

    /// Builds the path, validating its parameters.
    pub fn build(&self) -> Result<Arc<dyn NoisePath>> {
        self.check_steps()?;
        Ok(match self {
            PathSpec::VpLinear { beta_min, beta_max, t_min } => Arc::new(VpLinear::new(*beta_min, *beta_max, *t_min)?),
            PathSpec::VpCosine { s, t_min, t_max } => Arc::new(VpCosine::new(*s, *t_min, *t_max)?),
            PathSpec::VpTable { schedule, steps, betas } => match betas {
                Some(b) => Arc::new(VpTable::from_betas(b)?),
                None => Arc::new(VpTable::from_schedule(*schedule, *steps)?),
            },
            PathSpec::SubVp { beta_min, beta_max, t_min } => Arc::new(SubVp::new(*beta_min, *beta_max, *t_min)?),
            PathSpec::Ve { sigma_min, sigma_max, t_min } => Arc::new(Ve::new(*sigma_min, *sigma_max, *t_min)?),
            PathSpec::Edm { sigma_min, sigma_max } => Arc::new(Edm::new(*sigma_min, *sigma_max)?),
            PathSpec::RectifiedFlow { t_min, t_max } => Arc::new(RectifiedFlow::new(*t_min, *t_max)?),
            PathSpec::Ouve { theta, sigma_min, sigma_max, t_eps, t_max } => {
                Arc::new(Ouve::new(*theta, *sigma_min, *sigma_max, *t_eps, *t_max)?)
            }
            PathSpec::Sbve { k, c, t_eps } => Arc::new(Sbve::new(*k, *c, *t_eps)?),
            PathSpec::IrSde { schedule, steps, max_sigma, eps } => {
                Arc::new(IrSde::new(*schedule, *steps, *max_sigma, *eps)?)
            }
            PathSpec::Rddm { steps, sum_scale } => Arc::new(Rddm::new(*steps, *sum_scale)?),
            PathSpec::Resfusion { schedule, steps } => match schedule.as_str() {
                "linear_pro" | "linear-pro" | "linear" => Arc::new(Resfusion::linear_pro(*steps)?),
                "cosine_pro" | "cosine-pro" | "cosine" => Arc::new(Resfusion::cosine_pro(*steps)?),
                other => return Err(crate::Error::unknown("resfusion schedule", other, &["linear_pro", "cosine_pro"])),
            },
        })
    }

    /// Table paths build their tables eagerly: a step count from a file is bounded before anything is allocated.
    fn check_steps(&self) -> Result<()> {
        let steps = match self {
            PathSpec::VpTable { steps, betas: None, .. } => *steps,
            PathSpec::IrSde { steps, .. } | PathSpec::Rddm { steps, .. } | PathSpec::Resfusion { steps, .. } => *steps,
            _ => return Ok(()),
        };
        if steps > MAX_TABLE_STEPS {
            return Err(crate::Error::invalid(
                "path.steps",
                format!("{steps} steps; at most {MAX_TABLE_STEPS} (the path's tables are built in memory)"),
            ));
        }
        Ok(())
    }

    /// The default spec of a kind (reference defaults), for `--path NAME` style arguments.
    pub fn default_of(kind: &str) -> Result<PathSpec> {
        let json = format!("{{\"kind\": {kind:?}}}");
        serde_json::from_str(&json).map_err(|_| crate::Error::unknown("path", kind, Self::KINDS))
    }
}

fn d_beta_min() -> f64 {
    0.1
}
fn d_beta_max() -> f64 {
    20.0
}
fn d_t_min() -> f64 {
    1e-3
}
fn d_cos_s() -> f64 {
    0.008
}
fn d_cos_t_max() -> f64 {
    0.9946
}
fn d_schedule() -> BetaSchedule {
    BetaSchedule::DDPM
}
fn d_steps() -> usize {
    1000
}
fn d_ve_min() -> f64 {
    0.01
}
fn d_ve_max() -> f64 {
    50.0
}
fn d_ve_t_min() -> f64 {
    1e-5
}
fn d_edm_min() -> f64 {
    0.002
}
fn d_edm_max() -> f64 {
    80.0
}
fn d_one() -> f64 {
    1.0
}
fn d_theta() -> f64 {
    1.5
}
fn d_ouve_min() -> f64 {
    0.05
}
fn d_ouve_max() -> f64 {
    0.5
}
fn d_ouve_eps() -> f64 {
    0.03
}
fn d_sb_k() -> f64 {
    2.6
}
fn d_sb_c() -> f64 {
    0.4
}
fn d_sb_eps() -> f64 {
    1e-4
}
fn d_theta_schedule() -> ThetaSchedule {
    ThetaSchedule::Cosine
}
fn d_ir_steps() -> usize {
    100
}
fn d_ir_sigma() -> f64 {
    10.0
}
fn d_ir_eps() -> f64 {
    0.01
}
fn d_sum_scale() -> f64 {
    0.01
}
fn d_res_schedule() -> String {
    "linear_pro".into()
}
fn d_res_steps() -> usize {
    12
}
