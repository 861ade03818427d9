//! Empirical model statistics (EMS) of DPM-Solver-v3 (Zheng et al., NeurIPS 2023): per logSNR λ, three
//! coefficient vectors that make the ODE's nonlinear part as small as the model allows.
//!
//! With `N = σ·ε̂(x, λ)` and `f = (N − l·x)/α`, the probability-flow ODE is `d(x/α)/dλ = −l·x/α − f`. The
//! statistics are
//! - `l_λ = E[diag ∇ₓN]`, the best linear part of N (so f varies little with x);
//! - `s_λ, b_λ = argmin E‖f′ − s·f − b‖²`, the best affine model of f's total λ-derivative along trajectories,
//!
//! each per data coordinate, one value shared by all coordinates, or pooled over chosen axes of a sample (a
//! spectrogram's time frames: one value per channel and frequency, for any length) — see [`Pooling`]. [`estimate`] computes them from a model on trajectories of a set of starting points; the solver
//! ([`super::v3::DpmSolverV3`]) reads them back with [`EmpiricalStats::read`].
//!
//! Between λ nodes the statistics are linear; integrals over them are trapezoid sums on sub-grids that contain
//! every node (on a step grid aligned with the nodes and no refinement, exactly the sums of the reference).

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::common::data_step;
use super::run::Run;
use crate::path::Point;
use crate::seed::SampleSeeds;
use crate::{Error, Result};

/// Format tag in the file's metadata.
const FORMAT: &str = "diffuse-ems";

/// The statistics l, s, b on an increasing grid of λ nodes.
#[derive(Debug, Clone)]
pub struct EmpiricalStats {
    lambdas: Vec<f64>,
    /// The shape of one node's statistics (`[]` when shared by all coordinates, size 1 on pooled axes).
    shape: Vec<i64>,
    /// `nodes × numel` values each, row-major (plain f64, so that solvers holding them are `Send + Sync`).
    l: Vec<f64>,
    s: Vec<f64>,
    b: Vec<f64>,
    /// Provenance (how they were computed), kept in the file.
    meta: HashMap<String, String>,
}

impl EmpiricalStats {
    /// Statistics from their values; `lambdas` strictly increasing (noise → data), each tensor `[nodes, *shape]`.
    pub fn new(lambdas: Vec<f64>, l: Tensor, s: Tensor, b: Tensor) -> Result<Self> {
        if lambdas.len() < 2 || lambdas.windows(2).any(|w| !(w[1] > w[0])) || lambdas.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("statistics", "need at least two finite λ nodes in increasing order"));
        }
        let size = l.size();
        if size.first() != Some(&(lambdas.len() as i64)) || s.size() != size || b.size() != size {
            return Err(Error::invalid(
                "statistics",
                format!(
                    "l, s and b must all be [{}, …] (one row per λ node); got {:?}, {:?}, {:?}",
                    lambdas.len(),
                    size,
                    s.size(),
                    b.size()
                ),
            ));
        }
        let values = |name: &str, t: Tensor| -> Result<Vec<f64>> {
            let flat = t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_contiguous()?.f_view([-1])?;
            let v = Vec::<f64>::try_from(flat)?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::invalid("statistics", format!("{name} has non-finite values")));
            }
            Ok(v)
        };
        let (l, s, b) = (values("l", l)?, values("s", s)?, values("b", b)?);
        Ok(EmpiricalStats { lambdas, shape: size[1..].to_vec(), l, s, b, meta: HashMap::new() })
    }

    /// The statistics that turn DPM-Solver-v3 into DPM-Solver++ (l = 1, s = b = 0; the reference's
    /// `degenerated`), shared by all coordinates.
    pub fn degenerate(lambda_lo: f64, lambda_hi: f64) -> Result<Self> {
        let shape = [2i64];
        let opts = (Kind::Double, Device::Cpu);
        Self::new(
            vec![lambda_lo, lambda_hi],
            Tensor::ones(shape, opts),
            Tensor::zeros(shape, opts),
            Tensor::zeros(shape, opts),
        )
    }

    /// The λ nodes.
    pub fn lambdas(&self) -> &[f64] {
        &self.lambdas
    }

    /// The shape of one node's statistics (`[]` when shared by all coordinates, size 1 on pooled axes).
    pub fn shape(&self) -> Vec<i64> {
        self.shape.clone()
    }

    /// (l, s, b) as `[nodes, *shape]` float64 tensors.
    pub fn values(&self) -> (Tensor, Tensor, Tensor) {
        let mut dims = vec![self.lambdas.len() as i64];
        dims.extend(&self.shape);
        let t = |v: &[f64]| Tensor::from_slice(v).view(dims.as_slice());
        (t(&self.l), t(&self.s), t(&self.b))
    }

    /// Provenance metadata.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.meta
    }

    /// Adds provenance metadata.
    pub fn with_metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.meta.insert(key.to_string(), value.into());
        self
    }

    /// Whether λ lies within the nodes (with a relative slack of 1e-9 for rounding).
    pub fn covers(&self, lambda: f64) -> bool {
        let (lo, hi) = (self.lambdas[0], *self.lambdas.last().unwrap());
        let slack = 1e-9 * (1.0 + lo.abs().max(hi.abs()));
        lambda >= lo - slack && lambda <= hi + slack
    }

    /// The interval `[lo, hi]` cut into panels: every node inside, the ends, and each piece split further into
    /// panels no wider than `panel` (`None`: no splitting).
    pub fn subgrid(&self, lo: f64, hi: f64, panel: Option<f64>) -> Vec<f64> {
        let mut breaks = vec![lo];
        let slack = 1e-12 * (1.0 + lo.abs().max(hi.abs()));
        breaks.extend(self.lambdas.iter().copied().filter(|&v| v > lo + slack && v < hi - slack));
        breaks.push(hi);
        let mut out = vec![lo];
        for w in breaks.windows(2) {
            let pieces = match panel {
                Some(p) if p > 0.0 => ((w[1] - w[0]) / p).ceil().max(1.0) as usize,
                _ => 1,
            };
            out.extend(
                (1..=pieces).map(|k| if k == pieces { w[1] } else { w[0] + (w[1] - w[0]) * k as f64 / pieces as f64 }),
            );
        }
        out
    }

    /// (l, s, b) at the given λ values, linear between nodes (clamped at the ends): `[len, *shape]` each.
    pub fn at(&self, lambdas: &[f64]) -> Result<(Tensor, Tensor, Tensor)> {
        let n = self.lambdas.len();
        let numel = self.l.len() / n;
        let lerp = |v: &[f64]| -> Tensor {
            let mut out = Vec::with_capacity(lambdas.len() * numel);
            for &x in lambdas {
                let i = self.lambdas.partition_point(|&g| g <= x).clamp(1, n - 1) - 1;
                let w = ((x - self.lambdas[i]) / (self.lambdas[i + 1] - self.lambdas[i])).clamp(0.0, 1.0);
                let (a, b) = (&v[i * numel..(i + 1) * numel], &v[(i + 1) * numel..(i + 2) * numel]);
                out.extend(a.iter().zip(b).map(|(a, b)| a + w * (b - a)));
            }
            let mut dims = vec![lambdas.len() as i64];
            dims.extend(&self.shape);
            Tensor::from_slice(&out).view(dims.as_slice())
        };
        Ok((lerp(&self.l), lerp(&self.s), lerp(&self.b)))
    }

    /// Serializes to safetensors (float32 values; the λ nodes exactly, in the metadata).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut meta = self.meta.clone();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("version".into(), "1".into());
        meta.insert(
            "lambdas".into(),
            serde_json::to_string(&self.lambdas).map_err(|e| Error::invalid("statistics", e.to_string()))?,
        );
        let (l, s, b) = self.values();
        let tensors = vec![("l".to_string(), l), ("s".to_string(), s), ("b".to_string(), b)];
        crate::weights::to_bytes(&tensors, meta)
    }

    /// Writes the statistics file atomically (an existing file only with `force`).
    pub fn write(&self, path: &Path, force: bool) -> Result<()> {
        crate::io::write_bytes_atomic(path, force, &self.to_bytes()?)
    }

    /// Reads a statistics file written by [`EmpiricalStats::write`]; errors name the file.
    pub fn read(path: &Path) -> Result<Self> {
        let (tensors, mut meta) = crate::weights::read(path)?;
        let bad = |why: String| Error::file(path, format!("not a DPM-Solver-v3 statistics file: {why}"));
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!("metadata 'format' is {:?}, expected \"{FORMAT}\"", meta.get("format"))));
        }
        let lambdas: Vec<f64> = meta
            .get("lambdas")
            .ok_or_else(|| bad("no 'lambdas' in the metadata".into()))
            .and_then(|s| serde_json::from_str(s).map_err(|e| bad(format!("'lambdas': {e}"))))?;
        let get = |name: &str| -> Result<Tensor> {
            tensors
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| bad(format!("no tensor '{name}'")))
        };
        let (l, s, b) = (get("l")?, get("s")?, get("b")?);
        for k in ["format", "version", "lambdas"] {
            meta.remove(k);
        }
        let mut stats = Self::new(lambdas, l, s, b).map_err(|e| bad(e.to_string()))?;
        stats.meta = meta;
        Ok(stats)
    }
}

/// Which coordinates share one value of the statistics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Pooling {
    /// One value per coordinate of a sample (data of one fixed shape).
    #[default]
    PerCoordinate,
    /// One value per λ for every coordinate (data of any shape).
    All,
    /// Pooled over these axes of a sample (0 = the first axis after the batch), kept there with size 1 so they
    /// broadcast: `[2]` for spectrograms `[batch, 2, F, T]` gives one value per channel and frequency, valid for
    /// any number of frames.
    Axes(Vec<usize>),
}

impl Pooling {
    /// The dimensions of a `[batch, *sample]` tensor of rank `rank` to average over, batch included.
    fn dims(&self, rank: usize) -> Result<Vec<i64>> {
        match self {
            Pooling::PerCoordinate => Ok(vec![0]),
            Pooling::All => Ok((0..rank as i64).collect()),
            Pooling::Axes(axes) => {
                if let Some(bad) = axes.iter().find(|&&a| a + 1 >= rank) {
                    return Err(Error::invalid(
                        "statistics",
                        format!("pooling axis {bad} does not exist in samples of rank {}", rank - 1),
                    ));
                }
                Ok(std::iter::once(0).chain(axes.iter().map(|&a| a as i64 + 1)).collect())
            }
        }
    }

    /// The mean of `t` (`[batch, *sample]`) over the pooled coordinates, in the statistics' shape.
    fn mean(&self, t: &Tensor) -> Result<Tensor> {
        let dims = self.dims(t.dim())?;
        Ok(match self {
            Pooling::All => t.f_mean_dim(dims.as_slice(), false, Kind::Double)?,
            _ => t.f_mean_dim(dims.as_slice(), true, Kind::Double)?.f_squeeze_dim(0)?,
        })
    }

    /// How the file's metadata names it.
    fn describe(&self) -> String {
        match self {
            Pooling::PerCoordinate => "per coordinate".into(),
            Pooling::All => "shared by all coordinates".into(),
            Pooling::Axes(a) => format!("pooled over sample axes {a:?}"),
        }
    }
}

/// How [`estimate`] computes the statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct EmsSettings {
    /// Intervals of the uniform λ grid (the statistics live on its nodes).
    pub intervals: usize,
    /// Rademacher probes per node for the Jacobian diagonal.
    pub probes: usize,
    /// Which coordinates share a value.
    pub pooling: Pooling,
    /// Seed of the probes.
    pub seed: u64,
}

impl Default for EmsSettings {
    fn default() -> Self {
        EmsSettings { intervals: 250, probes: 4, pooling: Pooling::PerCoordinate, seed: 0 }
    }
}

/// The per-coordinate (or pooled) least-squares fit `f′ ≈ s·f + b` over the batch.
fn fit(f: &Tensor, fp: &Tensor, pooling: &Pooling) -> Result<(Tensor, Tensor)> {
    // Means with every dimension kept, so they broadcast against f; reshaped to the statistics' shape at the end.
    let dims = pooling.dims(f.dim())?;
    let mean = |t: &Tensor| t.f_mean_dim(dims.as_slice(), true, Kind::Double);
    let (mf, mfp) = (mean(f)?, mean(fp)?);
    let fc = f.f_sub(&mf)?;
    let var = mean(&fc.f_square()?)?;
    let cov = mean(&fc.f_mul(&fp.f_sub(&mfp)?)?)?;
    let scale = mean(&f.f_square()?)?;
    let varies = var.f_gt_tensor(&scale.f_mul_scalar(1e-12)?.f_add_scalar(1e-300)?)?;
    let s = cov.f_div(&var.f_clamp_min(1e-300)?)?.f_where_self(&varies, &var.f_zeros_like()?)?;
    let b = mfp.f_sub(&s.f_mul(&mf)?)?;
    let shape = |t: Tensor| -> Result<Tensor> {
        Ok(match pooling {
            Pooling::All => t.f_reshape([] as [i64; 0])?,
            _ => t.f_squeeze_dim(0)?,
        })
    };
    Ok((shape(s)?, shape(b)?))
}

/// Computes the statistics of `run`'s model from the states `x_tilde` (`x − γ·μ`, a batch) at `start` down to
/// `end` (both on the path, σ > 0). Each trajectory is followed over a uniform λ grid by DPM-Solver++(2M)
/// (one model evaluation per node); at every node l comes from `probes` vector–Jacobian products and f′ from
/// second-order differences of f along the trajectory. Costs `(1 + probes)·(intervals + 1)` evaluations and as
/// many backward passes per sample. `progress(done, total)` hears of every node.
pub fn estimate(
    run: &mut Run<'_>,
    x_tilde: &Tensor,
    start: &Point,
    end: &Point,
    settings: &EmsSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EmpiricalStats> {
    let (lam0, lam1) = (start.lambda(), end.lambda());
    if !(lam0.is_finite() && lam1.is_finite() && lam1 > lam0) || start.alpha <= 0.0 {
        return Err(Error::invalid(
            "statistics",
            format!("need a start with α > 0 and an end nearer the data (λ {lam0} → {lam1})"),
        ));
    }
    if settings.intervals < 2 || settings.probes == 0 {
        return Err(Error::invalid("statistics", "need at least 2 intervals and 1 probe"));
    }
    let k = settings.intervals;
    let lambdas: Vec<f64> = (0..=k).map(|i| lam0 + (lam1 - lam0) * i as f64 / k as f64).collect();
    let dl = lambdas[1] - lambdas[0];
    let batch = x_tilde.size()[0] as usize;
    let seeds = SampleSeeds::new(settings.seed, 0, batch);
    let (mut ls, mut ss, mut bs) = (Vec::new(), Vec::new(), Vec::new());
    // f at the last three nodes, to difference along the trajectory.
    let mut fs: Vec<Tensor> = Vec::new();
    let mut x = x_tilde.f_detach()?;
    let mut x0_prev: Option<Tensor> = None;
    for (i, &lam) in lambdas.iter().enumerate() {
        let p = if i == 0 {
            *start
        } else if i == k {
            *end
        } else {
            run.point_at_lambda(lam)
        };
        let (eps, l) = eps_and_jacobian_diag(run, &x, &p, &seeds, settings)?;
        let f = eps.f_mul_scalar(p.sigma)?.f_sub(&l.f_mul(&x)?)?.f_div_scalar(p.alpha)?;
        ls.push(l);
        fs.push(f);
        // f′ at the previous node by central differences (one-sided at the first one).
        if i >= 2 {
            let n = fs.len();
            if i == 2 {
                let fp0 = lin3(-1.5, &fs[n - 3], 2.0, &fs[n - 2], -0.5, &fs[n - 1], dl)?;
                push_fit(&mut ss, &mut bs, &fs[n - 3], fp0, &settings.pooling)?;
            }
            let fp = lin3(-0.5, &fs[n - 3], 0.0, &fs[n - 2], 0.5, &fs[n - 1], dl)?;
            push_fit(&mut ss, &mut bs, &fs[n - 2], fp, &settings.pooling)?;
            if i == k {
                let fpk = lin3(0.5, &fs[n - 3], -2.0, &fs[n - 2], 1.5, &fs[n - 1], dl)?;
                push_fit(&mut ss, &mut bs, &fs[n - 1], fpk, &settings.pooling)?;
            }
            drop(fs.remove(0));
        }
        if i < k {
            let q = run.point_at_lambda(lambdas[i + 1]);
            let x0 = x.f_sub(&eps.f_mul_scalar(p.sigma)?)?.f_div_scalar(p.alpha)?;
            let d = match &x0_prev {
                Some(prev) => x0.f_mul_scalar(1.5)?.f_sub(&prev.f_mul_scalar(0.5)?)?,
                None => x0.shallow_clone(),
            };
            x = data_step(&x, &d, &p, &q)?;
            x0_prev = Some(x0);
        }
        if !bool::try_from(x.f_isfinite()?.f_all()?)? {
            return Err(Error::invalid("statistics", format!("the trajectories diverged at λ = {lam:.3}")));
        }
        progress(i + 1, k + 1);
    }
    let stack = |v: &[Tensor]| Tensor::f_stack(v, 0);
    let stats = EmpiricalStats::new(lambdas, stack(&ls)?, stack(&ss)?, stack(&bs)?)?;
    Ok(stats
        .with_metadata("samples", batch.to_string())
        .with_metadata("probes", settings.probes.to_string())
        .with_metadata("pooling", settings.pooling.describe())
        .with_metadata("seed", settings.seed.to_string()))
}

/// ε̂ at (x̃, p) and the estimate of diag ∇ₓN (N = σ·ε̂): the mean over probes v of v ⊙ (vᵀ∇ₓN), pooled over the
/// batch (and the pooled coordinates).
fn eps_and_jacobian_diag(
    run: &mut Run<'_>,
    x: &Tensor,
    p: &Point,
    seeds: &SampleSeeds,
    settings: &EmsSettings,
) -> Result<(Tensor, Tensor)> {
    let shape = x.size();
    let mut acc: Option<Tensor> = None;
    let mut eps_out = None;
    for j in 0..settings.probes {
        // The same probes at every node: the estimate is then a smooth function of λ (its noise too), so
        // differences along the trajectory stay small.
        let v = seeds.normal(j as u64, &shape[1..], x.kind(), x.device()).f_sign()?;
        let xr = x.f_detach()?.set_requires_grad(true);
        let vjp = tch::with_grad(|| -> Result<(Tensor, Tensor)> {
            let eps = run.eps(&xr, p)?;
            let n = eps.f_mul_scalar(p.sigma)?;
            let g = Tensor::f_run_backward(&[n.f_mul(&v)?.f_sum(Kind::Double)?], &[&xr], false, false)?;
            Ok((eps.f_detach()?, g.into_iter().next().unwrap()))
        })?;
        let term = vjp.1.f_mul(&v)?;
        acc = Some(match acc {
            Some(a) => a.f_add(&term)?,
            None => term,
        });
        eps_out = Some(vjp.0);
    }
    let mean_probe = acc.unwrap().f_div_scalar(settings.probes as f64)?;
    let l = settings.pooling.mean(&mean_probe)?;
    Ok((eps_out.unwrap(), l.f_to_kind(x.kind())?))
}

fn lin3(a: f64, x: &Tensor, b: f64, y: &Tensor, c: f64, z: &Tensor, h: f64) -> Result<Tensor> {
    Ok(x.f_mul_scalar(a / h)?.f_add(&y.f_mul_scalar(b / h)?)?.f_add(&z.f_mul_scalar(c / h)?)?)
}

fn push_fit(ss: &mut Vec<Tensor>, bs: &mut Vec<Tensor>, f: &Tensor, fp: Tensor, pooling: &Pooling) -> Result<()> {
    let (s, b) = fit(f, &fp, pooling)?;
    ss.push(s);
    bs.push(b);
    Ok(())
}
