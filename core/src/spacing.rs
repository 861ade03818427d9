//! Time grids: where a sampler evaluates the model, from the start time down to the end.
//!
//! A grid is a strictly decreasing list of [`Point`]s. With [`End::Zero`] its last point is [`Point::DATA`]
//! (σ = 0) and the step onto it is a first-order denoising jump; with [`End::Time`] the trajectory stops at
//! that time.

use serde::{Deserialize, Serialize};

use crate::path::{NoisePath, Point};
use crate::{Error, Result};

/// `points` evenly spaced values from `start` to `end` inclusive (`[start]` for one point); shared by every time
/// grid here and by the discrete-time samplers.
pub fn linspace(start: f64, end: f64, points: usize) -> Vec<f64> {
    match points {
        0 => Vec::new(),
        1 => vec![start],
        n => (0..n).map(|i| if i + 1 == n { end } else { start + (end - start) * i as f64 / (n - 1) as f64 }).collect(),
    }
}

/// How the grid's times are spread between its ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Spacing {
    /// Uniform in t.
    #[serde(alias = "time_uniform", alias = "uniform")]
    UniformT,
    /// Uniform in λ = log-SNR/2 (dpm-solver's `logSNR`).
    #[serde(alias = "logsnr", alias = "log_snr", alias = "uniform_lambda")]
    UniformLambda,
    /// Uniform in √t (dpm-solver's `time_quadratic`, DDIM on small images).
    TimeQuadratic,
    /// Karras et al.: uniform in σ̄^{1/ρ} with σ̄ = σ/α.
    Karras {
        /// ρ (EDM: 7).
        #[serde(default = "default_rho")]
        rho: f64,
    },
    /// Uniform in (t − t_min)^{1/ρ}: Karras's ramp applied to the time itself (on a discrete table, to the step
    /// index), as the truncated schedules of "Hyperparameters are all you need" (ρ = 1.2).
    KarrasTime {
        /// ρ.
        #[serde(default = "default_rho_time")]
        rho: f64,
    },
    /// diffusers' "leading" integer steps of a discrete-time table (plus `offset`, as `steps_offset`).
    Leading {
        /// Added to every step (Stable Diffusion: 1).
        #[serde(default)]
        offset: usize,
    },
    /// diffusers' "trailing" integer steps of a discrete-time table (ends at step N − 1).
    Trailing,
    /// An explicit, strictly decreasing list of times (the start; the end comes from [`End`]).
    Custom {
        /// The times.
        times: Vec<f64>,
    },
}

fn default_rho() -> f64 {
    7.0
}

fn default_rho_time() -> f64 {
    1.2
}

/// Where a trajectory ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    /// At the data (σ = 0), by a final denoising step from the path's `t_min`.
    Zero,
    /// At this time.
    Time(f64),
}

impl Serialize for End {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            End::Zero => s.serialize_str("zero"),
            End::Time(t) => s.serialize_f64(*t),
        }
    }
}

impl<'de> Deserialize<'de> for End {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Time(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Time(t) => Ok(End::Time(t)),
            Raw::Name(n) if n == "zero" || n == "data" => Ok(End::Zero),
            Raw::Name(n) => Err(serde::de::Error::custom(format!("end must be \"zero\" or a time, got \"{n}\""))),
        }
    }
}

impl Spacing {
    /// The valid `kind` names.
    pub const KINDS: &'static [&'static str] =
        &["uniform_t", "uniform_lambda", "time_quadratic", "karras", "karras_time", "leading", "trailing", "custom"];

    /// Parses a name with default parameters (`karras` → ρ = 7).
    pub fn from_name(name: &str) -> Result<Spacing> {
        serde_json::from_str(&format!("{{\"kind\": {name:?}}}"))
            .map_err(|_| Error::unknown("spacing", name, Self::KINDS))
    }
}

/// A full grid request: spacing, end, and optional start time and λ clipping.
#[derive(Debug, Clone, PartialEq)]
pub struct GridSpec {
    /// How times are spread.
    pub spacing: Spacing,
    /// Where the trajectory ends.
    pub end: End,
    /// Start time (default: the path's `t_max`).
    pub t_start: Option<f64>,
    /// Start no lower than this λ (diffusers' `lambda_min_clipped`, e.g. −5.1 for cosine).
    pub lambda_min: Option<f64>,
}

impl GridSpec {
    /// Grid spec with the given spacing and end, starting at `t_max`.
    pub fn new(spacing: Spacing, end: End) -> Self {
        GridSpec { spacing, end, t_start: None, lambda_min: None }
    }

    /// The grid of `intervals` steps (so `intervals + 1` points, the last one the end).
    pub fn build(&self, path: &dyn NoisePath, intervals: usize) -> Result<Vec<Point>> {
        if intervals == 0 {
            return Err(Error::invalid("steps", "need at least one step"));
        }
        let (t_min, t_max) = path.t_range();
        let mut t_start = self.t_start.unwrap_or(t_max);
        if !(t_start.is_finite() && t_start > t_min && t_start <= t_max * (1.0 + 1e-12)) {
            return Err(Error::invalid("t_start", format!("{t_start} is outside the path's range ({t_min}, {t_max}]")));
        }
        if let Some(lmin) = self.lambda_min
            && path.lambda(t_start) < lmin
        {
            t_start = path.t_of_lambda(lmin);
        }
        let (t_last, to_data) = match self.end {
            End::Zero => (t_min, true),
            End::Time(t) => {
                if !(t.is_finite() && t >= t_min * (1.0 - 1e-12) && t < t_start) {
                    return Err(Error::invalid("end", format!("{t} must lie in [{t_min}, {t_start})")));
                }
                (t, false)
            }
        };
        // Points on the path proper: with a final jump to the data, `intervals` of them (t_start … t_min).
        let count = if to_data { intervals } else { intervals + 1 };
        let times = self.times(path, t_start, t_last, count)?;
        check_decreasing(&times, t_min, t_max)?;
        let mut points: Vec<Point> = times.iter().map(|&t| path.point(t)).collect();
        if to_data {
            points.push(Point::DATA);
        }
        Ok(points)
    }

    fn times(&self, path: &dyn NoisePath, hi: f64, lo: f64, count: usize) -> Result<Vec<f64>> {
        let lin = |a: f64, b: f64| linspace(a, b, count);
        Ok(match &self.spacing {
            Spacing::UniformT => lin(hi, lo),
            Spacing::TimeQuadratic => lin(hi.sqrt(), lo.sqrt()).into_iter().map(|s| s * s).collect(),
            Spacing::UniformLambda => {
                let (l0, l1) = (path.lambda(hi), path.lambda(lo));
                if !l0.is_finite() {
                    return Err(Error::invalid(
                        "spacing",
                        format!(
                            "uniform_lambda needs a finite λ at the start; λ({hi}) = {l0}: start lower (t_start) or use uniform_t"
                        ),
                    ));
                }
                let mut ts: Vec<f64> = lin(l0, l1).into_iter().map(|l| path.t_of_lambda(l)).collect();
                pin_ends(&mut ts, hi, lo);
                ts
            }
            Spacing::Karras { rho } => {
                if !(*rho > 0.0 && rho.is_finite()) {
                    return Err(Error::invalid("spacing.rho", format!("must be > 0, got {rho}")));
                }
                let (s0, s1) = (path.point(hi).sigma_bar(), path.point(lo).sigma_bar());
                if !s0.is_finite() {
                    return Err(Error::invalid(
                        "spacing",
                        format!(
                            "karras needs α > 0 at the start (σ/α = {s0} at t = {hi}): start lower (t_start) or use uniform_t"
                        ),
                    ));
                }
                let mut ts: Vec<f64> = lin(s0.powf(1.0 / rho), s1.powf(1.0 / rho))
                    .into_iter()
                    .map(|r| path.t_of_lambda(-(r.powf(*rho)).ln()))
                    .collect();
                pin_ends(&mut ts, hi, lo);
                ts
            }
            Spacing::KarrasTime { rho } => {
                if !(*rho > 0.0 && rho.is_finite()) {
                    return Err(Error::invalid("spacing.rho", format!("must be > 0, got {rho}")));
                }
                let t0 = path.t_range().0;
                let (a, b) = ((hi - t0).max(0.0).powf(1.0 / rho), (lo - t0).max(0.0).powf(1.0 / rho));
                let mut ts: Vec<f64> = lin(a, b).into_iter().map(|r| t0 + r.powf(*rho)).collect();
                pin_ends(&mut ts, hi, lo);
                ts
            }
            Spacing::Leading { offset } => {
                let n = train_steps(path, "leading")?;
                let ratio = n / count;
                if ratio == 0 {
                    return Err(Error::invalid(
                        "steps",
                        format!("leading spacing of {count} steps needs ≤ {n} (the table's steps)"),
                    ));
                }
                (0..count).rev().map(|i| ((i * ratio + offset).min(n - 1) + 1) as f64 / n as f64).collect()
            }
            Spacing::Trailing => {
                let n = train_steps(path, "trailing")?;
                if count > n {
                    return Err(Error::invalid(
                        "steps",
                        format!("trailing spacing of {count} steps needs ≤ {n} (the table's steps)"),
                    ));
                }
                let ratio = n as f64 / count as f64;
                (0..count)
                    .map(|i| (((n as f64 - i as f64 * ratio).round() as usize).max(1)) as f64 / n as f64)
                    .collect()
            }
            Spacing::Custom { times } => {
                if times.len() != count {
                    return Err(Error::invalid(
                        "spacing.times",
                        format!("{} times given, {count} needed for the requested steps and end", times.len()),
                    ));
                }
                times.clone()
            }
        })
    }
}

/// Numeric inversion can land a hair off the requested ends; pin them exactly.
fn pin_ends(ts: &mut [f64], hi: f64, lo: f64) {
    if let Some(first) = ts.first_mut() {
        *first = hi;
    }
    if ts.len() > 1
        && let Some(last) = ts.last_mut()
    {
        *last = lo;
    }
}

fn train_steps(path: &dyn NoisePath, what: &str) -> Result<usize> {
    path.train_steps().ok_or_else(|| {
        Error::invalid(
            "spacing",
            format!(
                "{what} spacing needs a discrete-time table path (vp_table, ir_sde, rddm, resfusion), not {}",
                path.name()
            ),
        )
    })
}

/// Strictly decreasing, finite, inside the path's range: otherwise a clear error (duplicated steps are a known
/// failure of Karras spacing on discrete tables, diffusers #12771).
fn check_decreasing(times: &[f64], t_min: f64, t_max: f64) -> Result<()> {
    for (i, t) in times.iter().enumerate() {
        if !t.is_finite() || *t < t_min * (1.0 - 1e-9) || *t > t_max * (1.0 + 1e-9) {
            return Err(Error::invalid(
                "times",
                format!("time {i} = {t} is outside the path's range [{t_min}, {t_max}]"),
            ));
        }
    }
    if let Some(i) = times.windows(2).position(|w| !(w[1] < w[0])) {
        return Err(Error::invalid(
            "times",
            format!(
                "times must be strictly decreasing, but t[{}] = {} is followed by {} (too many steps for this spacing?)",
                i,
                times[i],
                times[i + 1]
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{Edm, RectifiedFlow, VpLinear, VpTable};

    #[test]
    fn karras_matches_edm() {
        let edm = Edm::default();
        let g = GridSpec::new(Spacing::Karras { rho: 7.0 }, End::Zero).build(&edm, 18).unwrap();
        assert_eq!(g.len(), 19);
        let (smin, smax, n) = (0.002f64, 80.0f64, 18.0);
        for (i, p) in g.iter().take(18).enumerate() {
            let want =
                (smax.powf(1.0 / 7.0) + i as f64 / (n - 1.0) * (smin.powf(1.0 / 7.0) - smax.powf(1.0 / 7.0))).powf(7.0);
            assert!((p.sigma - want).abs() < 1e-12 * want, "i={i}: {} vs {want}", p.sigma);
        }
        assert!(g[18].is_data());
    }

    #[test]
    fn uniform_lambda_is_uniform_in_lambda() {
        let vp = VpLinear::default();
        let g = GridSpec::new(Spacing::UniformLambda, End::Time(1e-3)).build(&vp, 10).unwrap();
        let ls: Vec<f64> = g.iter().map(|p| p.lambda()).collect();
        let h = ls[1] - ls[0];
        assert!(ls.windows(2).all(|w| ((w[1] - w[0]) - h).abs() < 1e-9), "{ls:?}");
        assert_eq!(g[10].t, 1e-3);
    }

    #[test]
    fn trailing_and_leading_match_diffusers() {
        let p = VpTable::from_schedule(crate::path::BetaSchedule::DDPM, 1000).unwrap();
        let tr = GridSpec::new(Spacing::Trailing, End::Zero).build(&p, 10).unwrap();
        // diffusers trailing, 10 steps: 999, 899, …, 99.
        let steps: Vec<i64> = tr.iter().take(10).map(|q| (p.step_of_t(q.t)).round() as i64).collect();
        assert_eq!(steps, vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
        let le = GridSpec::new(Spacing::Leading { offset: 1 }, End::Zero).build(&p, 10).unwrap();
        let steps: Vec<i64> = le.iter().take(10).map(|q| (p.step_of_t(q.t)).round() as i64).collect();
        assert_eq!(steps, vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    }

    #[test]
    fn bad_grids_are_clear_errors() {
        let vp = VpLinear::default();
        let custom = |times: Vec<f64>| GridSpec::new(Spacing::Custom { times }, End::Zero).build(&vp, 3);
        assert!(custom(vec![0.9, 0.9, 0.1]).unwrap_err().to_string().contains("strictly decreasing"));
        assert!(custom(vec![1.5, 0.5, 0.1]).unwrap_err().to_string().contains("outside"));
        assert!(custom(vec![0.9, 0.5]).unwrap_err().to_string().contains("3 needed"));
        assert!(GridSpec::new(Spacing::UniformT, End::Zero).build(&vp, 0).is_err());
        assert!(
            GridSpec::new(Spacing::Trailing, End::Zero)
                .build(&vp, 4)
                .unwrap_err()
                .to_string()
                .contains("discrete-time")
        );
        let rf = RectifiedFlow::default();
        assert!(
            GridSpec::new(Spacing::Karras { rho: 7.0 }, End::Zero)
                .build(&rf, 4)
                .unwrap_err()
                .to_string()
                .contains("α > 0")
        );
        assert!(Spacing::from_name("karas").unwrap_err().to_string().contains("karras"));
        // Karras on a 1000-step table at 999 steps would duplicate steps; times are continuous here, so no
        // duplicates, and any grid that did collapse is rejected above.
        let t = VpTable::from_schedule(crate::path::BetaSchedule::DDPM, 1000).unwrap();
        let g = GridSpec::new(Spacing::Karras { rho: 7.0 }, End::Zero).build(&t, 999).unwrap();
        assert!(g.windows(2).all(|w| w[1].t < w[0].t || w[1].is_data()));
    }

    #[test]
    fn lambda_clipping_moves_the_start() {
        let cos = crate::path::VpCosine::default();
        let mut spec = GridSpec::new(Spacing::UniformT, End::Zero);
        spec.lambda_min = Some(-3.0);
        let g = spec.build(&cos, 5).unwrap();
        assert!((g[0].lambda() + 3.0).abs() < 1e-9, "{}", g[0].lambda());
    }
}
