//! The solver registry: one table of (name, parameters, constructor), and [`SolverSpec`], a solver name with its
//! parameters parsed and checked once (`FromStr`), which builds the solver with the run's options.
//!
//! Names: every row of the table, plus `unipc-bh1-P` / `unipc-bh2-P` for a UniPC predictor of order P (1–8).
//! Stochastic solvers take parameters as `name:key=value,…` (`pc:corrector=langevin,snr=0.16`, `ddim-eta:eta=0.3`).

use std::fmt;
use std::str::FromStr;

use super::deis::DeisTab;
use super::multistep::{DataMultistep, LowerOrderFinal, Predictor, StepStrategy, UniVariant};
use super::residual::{RddmDeterministic, ResfusionAncestral};
use super::rk::{self, Dopri5, RungeKutta, Variable};
use super::singlestep::{AdaptiveDpm, Form, Singlestep};
use super::stochastic::{
    DdimEta, EdmChurn, EulerMaruyama, PcCorrector, PcPredictor, PredictorCorrector, SdeDpmPlusPlus,
};
use super::v3::{DpmSolverV3, Toggle};
use super::{Solver, SolverOptions};
use crate::{Error, Result};

type Build = fn(&Params<'_>, &SolverOptions) -> Result<Box<dyn Solver>>;

/// One registry row.
struct Entry {
    name: &'static str,
    /// The `key=value` parameters it takes (stochastic solvers).
    params: &'static [&'static str],
    build: Build,
}

macro_rules! entry {
    ($name:literal, |$o:ident| $solver:expr) => {
        Entry { name: $name, params: &[], build: |_, $o| Ok(Box::new($solver)) }
    };
    ($name:literal, [$($key:literal),*], $build:expr) => {
        Entry { name: $name, params: &[$($key),*], build: $build }
    };
}

/// Every solver, in the order `diffuse solvers list` shows them (deterministic first).
const REGISTRY: &[Entry] = &[
    entry!("ddim", |_o| DataMultistep::ddim()),
    entry!("euler", |_o| RungeKutta::new(rk::EULER, Variable::SigmaBar)),
    entry!("heun", |_o| RungeKutta::new(rk::HEUN, Variable::SigmaBar)),
    entry!("rk4", |_o| RungeKutta::new(rk::RK4, Variable::SigmaBar)),
    entry!("euler-t", |_o| RungeKutta::new(rk::EULER, Variable::Time)),
    entry!("heun-t", |_o| RungeKutta::new(rk::HEUN, Variable::Time)),
    entry!("rk4-t", |_o| RungeKutta::new(rk::RK4, Variable::Time)),
    entry!("dpm-solver-1", |_o| Singlestep::new(Form::Noise, 1)),
    entry!("dpm-solver-2", |_o| Singlestep::new(Form::Noise, 2)),
    entry!("dpm-solver-3", |_o| Singlestep::new(Form::Noise, 3)),
    entry!("dpm++2s", |_o| Singlestep::new(Form::Data, 2)),
    entry!("dpm++3s", |_o| Singlestep::new(Form::Data, 3)),
    entry!("dpm-solver-2m", |o| DataMultistep::dpm_noise(2, o.lower_order_final).with_warmup(o.warmup)),
    entry!("dpm-solver-3m", |o| DataMultistep::dpm_noise(3, o.lower_order_final).with_warmup(o.warmup)),
    entry!("dpm++2m", |o| DataMultistep::dpmpp(2, None, o.lower_order_final).with_warmup(o.warmup)),
    entry!("dpm++3m", |o| DataMultistep::dpmpp(3, None, o.lower_order_final).with_warmup(o.warmup)),
    entry!("dpm++3m-ref", |o| DataMultistep::dpmpp3m_reference(o.lower_order_final).with_warmup(o.warmup)),
    entry!("dpm++2m+unic", |o| DataMultistep::dpmpp(2, Some(UniVariant::Bh2), o.lower_order_final)
        .with_warmup(o.warmup)),
    entry!("dpm++3m+unic", |o| DataMultistep::dpmpp(3, Some(UniVariant::Bh2), o.lower_order_final)
        .with_warmup(o.warmup)),
    entry!("unipc-bh1", |o| DataMultistep::unipc(UniVariant::Bh1, 2, o.lower_order_final).with_warmup(o.warmup)),
    entry!("unipc-bh2", |o| DataMultistep::unipc(UniVariant::Bh2, 2, o.lower_order_final).with_warmup(o.warmup)),
    entry!("deis-1", |o| DeisTab::new(1, o.lower_order_final).with_warmup(o.warmup)),
    entry!("deis-2", |o| DeisTab::new(2, o.lower_order_final).with_warmup(o.warmup)),
    entry!("deis-3", |o| DeisTab::new(3, o.lower_order_final).with_warmup(o.warmup)),
    entry!("dopri5", |o| Dopri5 { rtol: o.rtol, atol: o.atol }),
    entry!("dpm-solver-12", |o| AdaptiveDpm::new(2, o.rtol, o.atol)),
    entry!("dpm-solver-23", |o| AdaptiveDpm::new(3, o.rtol, o.atol)),
    entry!("rddm", |_o| RddmDeterministic),
    entry!("ddpm", |_o| DdimEta { eta: 1.0 }),
    entry!("resfusion", |_o| ResfusionAncestral),
    entry!("ddim-eta", ["eta"], |p, o| Ok(Box::new(DdimEta { eta: eta(p, o.eta)? }))),
    entry!("euler-maruyama", |_o| EulerMaruyama),
    entry!("pc", ["predictor", "corrector", "snr", "steps"], build_pc),
    entry!("sde-dpm++2m", ["eta"], |p, _| Ok(Box::new(SdeDpmPlusPlus { order: 2, eta: eta(p, 1.0)? }))),
    entry!("sde-dpm++3m", ["eta"], |p, _| Ok(Box::new(SdeDpmPlusPlus { order: 3, eta: eta(p, 1.0)? }))),
    entry!("edm-churn", ["churn", "tmin", "tmax", "noise"], build_edm_churn),
    entry!("dpm-solver-v3", ["stats", "order", "pseudo", "corrector", "panel"], build_v3),
];

/// Extra names `diffuse solvers list` shows (UniPC with a third-order predictor).
const LISTED_VARIANTS: &[&str] = &["unipc-bh1-3", "unipc-bh2-3"];

/// A solver name with its parameters, parsed and checked once: the name is in the registry and every parameter
/// is one it takes. Shown (and serialised) as the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct SolverSpec {
    text: String,
    entry: usize,
    /// UniPC's predictor order from a `-P` suffix.
    unipc_order: Option<u32>,
    params: Vec<(String, String)>,
}

/// Splits a comma-separated list of solver specs, keeping each spec's `key=value` parameters with it:
/// `dpm++2m,dpm-solver-v3:stats=a.st,order=1` is `dpm++2m` and `dpm-solver-v3:stats=a.st,order=1`. (A piece with
/// `=` and no `:` continues the spec before it.)
pub fn split_solver_list(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match out.last_mut() {
            Some(last) if piece.contains('=') && !piece.contains(':') && last.contains(':') => {
                last.push(',');
                last.push_str(piece);
            }
            _ => out.push(piece.to_string()),
        }
    }
    out
}

/// A comma-separated list of solver specs, parsed with [`split_solver_list`] (for command-line lists).
#[derive(Debug, Clone, PartialEq)]
pub struct SolverList(pub Vec<SolverSpec>);

impl FromStr for SolverList {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let specs = split_solver_list(text).iter().map(|s| s.parse()).collect::<Result<Vec<SolverSpec>>>()?;
        if specs.is_empty() {
            return Err(Error::invalid("solver", "an empty list of solvers"));
        }
        Ok(SolverList(specs))
    }
}

impl FromStr for SolverSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let (name, params) = split_params(text)?;
        let (entry, unipc_order) = match REGISTRY.iter().position(|e| e.name == name) {
            Some(i) => (i, None),
            None => unipc_suffix(name).ok_or_else(|| Error::unknown("solver", name, &names()))?,
        };
        let allowed = REGISTRY[entry].params;
        if let Some((k, _)) = params.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(Error::invalid(
                "solver",
                if allowed.is_empty() {
                    format!("'{name}' takes no parameters (got '{k}')")
                } else {
                    format!("unknown parameter '{k}' in '{text}'; valid: {}", allowed.join(", "))
                },
            ));
        }
        Ok(SolverSpec { text: text.to_string(), entry, unipc_order, params })
    }
}

impl fmt::Display for SolverSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for SolverSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for SolverSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl SolverSpec {
    /// The registry name (without parameters).
    pub fn name(&self) -> &str {
        self.text.split_once(':').map_or(&self.text, |(n, _)| n)
    }

    /// The solver's constant per-step strategy at `order` when it is a point of the space USF schedules mix (ddim,
    /// dpm++2m/3m with or without UniC, unipc, DPM-Solver multistep on ε̂, and the singlestep dpm++2s/3s and
    /// dpm-solver-2/3): a schedule of these strategies with the solver's own orders runs exactly this solver.
    pub fn strategy(&self, order: u32) -> Option<StepStrategy> {
        let singlestep = |predictor| {
            Some(if order >= 2 {
                StepStrategy::singlestep(order, predictor)
            } else {
                StepStrategy::multistep(order, predictor, None)
            })
        };
        let (predictor, corrector) = match self.name() {
            "dpm++2s" | "dpm++3s" => return singlestep(Predictor::DpmPlusPlus),
            "dpm-solver-2" | "dpm-solver-3" => return singlestep(Predictor::DpmNoise),
            "ddim" | "dpm++2m" | "dpm++3m" => (Predictor::DpmPlusPlus, None),
            "dpm++2m+unic" | "dpm++3m+unic" => (Predictor::DpmPlusPlus, Some(UniVariant::Bh2)),
            "dpm-solver-2m" | "dpm-solver-3m" => (Predictor::DpmNoise, None),
            n if n.starts_with("unipc-bh1") => (Predictor::UniP(UniVariant::Bh1), Some(UniVariant::Bh1)),
            n if n.starts_with("unipc-bh2") => (Predictor::UniP(UniVariant::Bh2), Some(UniVariant::Bh2)),
            _ => return None,
        };
        Some(StepStrategy::multistep(order, predictor, corrector))
    }

    /// Builds the solver with the run's options (numeric parameters are checked here).
    pub fn build(&self, opts: &SolverOptions) -> Result<Box<dyn Solver>> {
        if let Some(order) = self.unipc_order {
            let variant = if self.name().starts_with("unipc-bh1") { UniVariant::Bh1 } else { UniVariant::Bh2 };
            return Ok(Box::new(DataMultistep::unipc(variant, order, opts.lower_order_final).with_warmup(opts.warmup)));
        }
        (REGISTRY[self.entry].build)(&Params { spec: &self.text, items: self.params.clone() }, opts)
    }
}

/// `unipc-bh1-P` / `unipc-bh2-P` → the UniPC row and P.
fn unipc_suffix(name: &str) -> Option<(usize, Option<u32>)> {
    let (base, rest) = name.rsplit_once('-').filter(|(b, _)| *b == "unipc-bh1" || *b == "unipc-bh2")?;
    let order: u32 = rest.parse().ok().filter(|o| (1..=8).contains(o))?;
    Some((REGISTRY.iter().position(|e| e.name == base)?, Some(order)))
}

/// Registry names in listing order, the UniPC variants after their base rows.
fn names() -> Vec<&'static str> {
    let mut names = Vec::new();
    for e in REGISTRY {
        names.push(e.name);
        if e.name == "unipc-bh2" {
            names.extend(LISTED_VARIANTS);
        }
    }
    names
}

/// Builds a solver from its text (`dpm++2m`, `unipc-bh2-4`, `pc:corrector=langevin,snr=0.16`, …).
pub fn build_solver(spec: &str, opts: &SolverOptions) -> Result<Box<dyn Solver>> {
    spec.parse::<SolverSpec>()?.build(opts)
}

/// Every solver by name, with one-line descriptions (`diffuse solvers list`), deterministic ones first.
pub fn solver_names() -> Vec<(String, String)> {
    let mut all: Vec<(String, String, bool)> = names()
        .into_iter()
        .filter_map(|n| {
            build_solver(n, &SolverOptions::default())
                .ok()
                .map(|s| (n.to_string(), s.info().description, s.info().stochastic))
        })
        .collect();
    all.sort_by_key(|(_, _, stochastic)| *stochastic);
    all.into_iter().map(|(n, d, _)| (n, d)).collect()
}

/// `name:key=value,…` → (name, parameters).
fn split_params(spec: &str) -> Result<(&str, Vec<(String, String)>)> {
    let Some((name, rest)) = spec.split_once(':') else { return Ok((spec, Vec::new())) };
    let mut params = Vec::new();
    for item in rest.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| Error::invalid("solver", format!("'{item}' in '{spec}': parameters are key=value")))?;
        params.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((name, params))
}

/// The parameters of one spec.
struct Params<'a> {
    spec: &'a str,
    items: Vec<(String, String)>,
}

impl Params<'_> {
    fn num(&self, key: &str, default: f64) -> Result<f64> {
        match self.items.iter().find(|(k, _)| k == key) {
            None => Ok(default),
            Some((_, v)) => {
                v.parse().map_err(|_| Error::invalid(key, format!("'{v}' is not a number (in '{}')", self.spec)))
            }
        }
    }
    fn text(&self, key: &str, default: &str) -> String {
        self.items.iter().find(|(k, _)| k == key).map_or(default.to_string(), |(_, v)| v.clone())
    }
}

fn eta(params: &Params<'_>, default: f64) -> Result<f64> {
    let eta = params.num("eta", default)?;
    if !(eta >= 0.0 && eta.is_finite()) {
        return Err(Error::invalid("eta", format!("must be ≥ 0, got {eta}")));
    }
    Ok(eta)
}

fn build_pc(params: &Params<'_>, opts: &SolverOptions) -> Result<Box<dyn Solver>> {
    let predictor = match params.text("predictor", "reverse_diffusion").as_str() {
        "euler_maruyama" | "em" => PcPredictor::EulerMaruyama,
        "reverse_diffusion" | "rd" => PcPredictor::ReverseDiffusion { kernel: false },
        "reverse_diffusion_kernel" => PcPredictor::ReverseDiffusion { kernel: true },
        "ancestral" => PcPredictor::Ancestral,
        "none" => PcPredictor::None,
        other => {
            return Err(Error::unknown(
                "predictor",
                other,
                &["euler_maruyama", "reverse_diffusion", "reverse_diffusion_kernel", "ancestral", "none"],
            ));
        }
    };
    let corrector = match params.text("corrector", "ald").as_str() {
        "langevin" => PcCorrector::Langevin,
        "ald" | "annealed_langevin" => PcCorrector::Ald,
        "none" => PcCorrector::None,
        other => return Err(Error::unknown("corrector", other, &["langevin", "ald", "none"])),
    };
    let steps = params.num("steps", opts.corrector_steps as f64)?;
    if !(steps >= 0.0 && steps.fract() == 0.0) {
        return Err(Error::invalid("steps", format!("corrector steps must be a whole number ≥ 0, got {steps}")));
    }
    let pc =
        PredictorCorrector { predictor, corrector, snr: params.num("snr", opts.snr)?, corrector_steps: steps as usize };
    pc.plan_steps(1, false)?; // validates snr and steps
    Ok(Box::new(pc))
}

/// `dpm-solver-v3:stats=FILE[,order=2][,pseudo=auto|on|off][,corrector=on|auto|off][,panel=0.02|none]`; order 2
/// and the corrector on every step were chosen on validation draws (the reference: order 3, `corrector=auto`).
fn build_v3(params: &Params<'_>, opts: &SolverOptions) -> Result<Box<dyn Solver>> {
    let stats = params.text("stats", "");
    if stats.is_empty() {
        return Err(Error::invalid(
            "dpm-solver-v3",
            "needs its statistics: dpm-solver-v3:stats=FILE (made by `diffuse solvers ems`)",
        ));
    }
    let order = params.num("order", 2.0)?;
    if order.fract() != 0.0 {
        return Err(Error::invalid("order", format!("must be a whole number, got {order}")));
    }
    let panel = match params.text("panel", "0.02").as_str() {
        "none" => None,
        _ => Some(params.num("panel", 0.02)?),
    };
    let solver = DpmSolverV3::from_file(stats.into(), order as u32)?
        .with_toggles(
            Toggle::parse("pseudo", &params.text("pseudo", "auto"))?,
            Toggle::parse("corrector", &params.text("corrector", "on"))?,
        )
        .with_panel(panel)?
        .with_lower_order_final(match opts.lower_order_final {
            LowerOrderFinal::Auto => LowerOrderFinal::Always,
            other => other,
        });
    Ok(Box::new(solver))
}

fn build_edm_churn(params: &Params<'_>, _: &SolverOptions) -> Result<Box<dyn Solver>> {
    let d = EdmChurn::default();
    let churn = EdmChurn {
        churn: params.num("churn", d.churn)?,
        s_min: params.num("tmin", d.s_min)?,
        s_max: params.num("tmax", d.s_max)?,
        s_noise: params.num("noise", d.s_noise)?,
    };
    if churn.churn < 0.0 || churn.s_noise < 0.0 {
        return Err(Error::invalid("edm-churn", "churn and noise must be ≥ 0"));
    }
    Ok(Box::new(churn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solver_lists_keep_each_specs_parameters() {
        assert_eq!(
            split_solver_list("dpm++2m, dpm-solver-v3:stats=a.st,order=1,pc:snr=0.3,ddim"),
            vec!["dpm++2m", "dpm-solver-v3:stats=a.st,order=1", "pc:snr=0.3", "ddim"]
        );
        // A parameter without a spec to belong to stays a piece of its own, and is then refused by name.
        assert_eq!(split_solver_list("order=1,ddim"), vec!["order=1", "ddim"]);
        assert!("order=1,ddim".parse::<SolverList>().is_err());
        assert!(" , ".parse::<SolverList>().is_err());
        let list: SolverList = "ddim-eta:eta=0.5,dpm++2m".parse().unwrap();
        assert_eq!(list.0.iter().map(|s| s.to_string()).collect::<Vec<_>>(), ["ddim-eta:eta=0.5", "dpm++2m"]);
    }

    /// Every listed name parses, prints as it was written and builds; parameters are checked at parse time.
    #[test]
    fn specs_parse_once_and_build() {
        for (name, _) in solver_names() {
            let spec: SolverSpec = name.parse().unwrap();
            assert_eq!(spec.to_string(), name);
            assert!(!spec.build(&SolverOptions::default()).unwrap().info().name.is_empty(), "{name}");
        }
        let s: SolverSpec = "pc:corrector=langevin,snr=0.16".parse().unwrap();
        assert_eq!(s.name(), "pc");
        assert!("dpm+2m".parse::<SolverSpec>().unwrap_err().to_string().contains("dpm+2m"));
        assert!("dpm++2m:eta=1".parse::<SolverSpec>().unwrap_err().to_string().contains("takes no parameters"));
        assert!("ddim-eta:churn=1".parse::<SolverSpec>().unwrap_err().to_string().contains("valid: eta"));
        assert!("unipc-bh2-9".parse::<SolverSpec>().is_err());
        assert_eq!(
            "unipc-bh1-4".parse::<SolverSpec>().unwrap().build(&SolverOptions::default()).unwrap().info().order,
            5
        );
        // Numbers are checked when built, with the run's options.
        assert!("ddim-eta:eta=-1".parse::<SolverSpec>().unwrap().build(&SolverOptions::default()).is_err());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"pc:corrector=langevin,snr=0.16\"");
        assert_eq!(serde_json::from_str::<SolverSpec>(&json).unwrap(), s);
    }
}
