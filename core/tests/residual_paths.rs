//! Residual restoration paths (IR-SDE, RDDM, Resfusion): exact parameterization equivalence, the mapping of RDDM's
//! and Resfusion's targets onto core's parameterizations, and the reference samplers against fixtures made by
//! `tools/make_residual_fixtures.py` from the reference update equations.

use diffuse_core::denoiser::{Conditioning, Denoiser, FnDenoiser};
use diffuse_core::param::{At, Prediction};
use diffuse_core::path::{NoisePath, PathSpec, Rddm, Resfusion};
use diffuse_core::solvers::{Budget, FixedNoise, NoNoise, SolverOptions, build_solver, sample};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use diffuse_core::{Parameterization, Result};
use serde_json::Value;
use tch::{Kind, Tensor};

const TOL: f64 = 1e-10;

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

fn vec_of(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn row(v: &[f64]) -> Tensor {
    Tensor::from_slice(v).to_kind(Kind::Double).view([1, v.len() as i64])
}

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/residual_samplers.json")).unwrap()
}

/// Every parameterization converts to every other and back to (x0, ε) exactly (f64, 1e-10) on `ir_sde`, `rddm`
/// and `resfusion`, at interior times and at the start (α = 0 on RDDM and Resfusion), where only the conversions
/// that need α > 0 (from ε or score) may refuse, with an error saying so (where α is a rounding error above 0, as at
/// Resfusion's T′, those two are ill-posed and skipped).
#[test]
fn parameterizations_convert_exactly_on_residual_paths() {
    let opts = (Kind::Double, tch::Device::Cpu);
    tch::manual_seed(7);
    let x0 = Tensor::randn([4, 6], opts);
    let eps = Tensor::randn([4, 6], opts);
    let mu = &x0 + Tensor::randn([4, 6], opts) * 0.3;
    for kind in ["ir_sde", "rddm", "resfusion"] {
        let path = PathSpec::default_of(kind).unwrap().build().unwrap();
        let (lo, hi) = path.t_range();
        for frac in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let t = lo + frac * (hi - lo);
            let p = path.point(t);
            let x = &(&x0 * p.alpha + &eps * p.sigma) + &mu * p.gamma;
            let at = At::new(path.as_ref(), t, &x, Some(&mu));
            let needs_alpha = |k: Parameterization| matches!(k, Parameterization::Eps | Parameterization::Score);
            let usable = |k: Parameterization| p.alpha == 0.0 || p.alpha > 1e-6 || !needs_alpha(k);
            for from in Parameterization::ALL.into_iter().filter(|k| usable(*k)) {
                let pred = Prediction::from_data(from, &x0, Some(&eps), &at).unwrap();
                let (xa, ea) = match pred.into_both(&at) {
                    Ok(v) => v,
                    Err(e) => {
                        assert!(p.alpha == 0.0, "{kind} t {t} {from:?}: {e}");
                        assert!(e.to_string().contains("α = 0"), "{kind} {from:?}: {e}");
                        continue;
                    }
                };
                assert!(max_diff(&xa, &x0) < TOL, "{kind} t {t} {from:?}: x0 {}", max_diff(&xa, &x0));
                assert!(max_diff(&ea, &eps) < TOL, "{kind} t {t} {from:?}: ε {}", max_diff(&ea, &eps));
                for to in Parameterization::ALL.into_iter().filter(|k| usable(*k)) {
                    let (xb, eb) = match Prediction::from_data(to, &xa, Some(&ea), &at).unwrap().into_both(&at) {
                        Ok(v) => v,
                        Err(e) => {
                            assert!(p.alpha == 0.0 && e.to_string().contains("α = 0"), "{kind} {to:?}: {e}");
                            continue;
                        }
                    };
                    assert!(max_diff(&xb, &x0) < TOL, "{kind} t {t} {from:?}→{to:?}: x0");
                    assert!(max_diff(&eb, &eps) < TOL, "{kind} t {t} {from:?}→{to:?}: ε");
                    let e2 = Prediction::from_data(to, &xa, Some(&ea), &at).unwrap().into_eps(&at);
                    if let Ok(e2) = e2 {
                        assert!(max_diff(&e2, &eps) < 1e-9, "{kind} t {t} {to:?}: into_eps");
                    }
                }
            }
        }
    }
}

/// RDDM's SM-Res, SM-N and SM-Res-N targets are core's `residual`, `eps` and `residual_noise` on the `rddm` path:
/// `I_t = I_0 + ᾱ_t·I_res + β̄_t·ε` with the reference's cumulative tables, at every integer step.
#[test]
fn rddm_targets_are_residual_eps_and_residual_noise() {
    let (steps, s) = (20usize, 0.01);
    let path = Rddm::new(steps, s).unwrap();
    // The reference tables: cumsum of a decreasing linear α and of an increasing linear β², normalised.
    let a_sum: f64 = (1..=steps).map(|i| i as f64).sum();
    let (mut abar, mut b2) = (0.0, 0.0);
    let i0 = row(&[0.2, -0.4, 0.9]);
    let i_in = row(&[0.5, 0.1, 0.7]);
    let eps = row(&[-1.1, 0.3, 0.6]);
    let i_res = &i_in - &i0;
    for n in 0..steps {
        abar += (steps - n) as f64 / a_sum;
        b2 += s * (n + 1) as f64 / a_sum;
        let t = (n + 1) as f64 / steps as f64;
        let x = &i0 + &i_res * abar + &eps * b2.sqrt();
        let p = path.point(t);
        let ours = &(&i0 * p.alpha + &eps * p.sigma) + &i_in * p.gamma;
        assert!(max_diff(&x, &ours) < 1e-12, "step {n}: path ≠ RDDM");
        let at = At::new(&path, t, &x, Some(&i_in));
        match Prediction::from_data(Parameterization::Residual, &i0, None, &at).unwrap() {
            Prediction::Residual(r) => assert!(max_diff(&r, &i_res) < 1e-12),
            other => panic!("{other:?}"),
        }
        match Prediction::from_data(Parameterization::ResidualNoise, &i0, None, &at).unwrap() {
            Prediction::ResidualNoise { residual, noise } => {
                assert!(max_diff(&residual, &i_res) < 1e-12);
                assert!(max_diff(&noise, &eps) < 1e-10, "step {n}: SM-Res-N noise");
            }
            other => panic!("{other:?}"),
        }
        if p.alpha > 0.0 {
            let got = Prediction::Eps(eps.shallow_clone()).into_data(&at).unwrap();
            assert!(max_diff(&got, &i0) < 1e-9, "step {n}: SM-N → I_0");
        }
    }
}

/// Resfusion's path and resnoise target in its own notation: `x_t = √ᾱ x0 + (1 − √ᾱ)R + √(1 − ᾱ)ε` and
/// `resnoise = ε + (1 − √α_n)√(1 − ᾱ_n)/β_n·R` at every step of the truncated T = 12 table (fixture weights),
/// including the truncated step at T′.
#[test]
fn resnoise_is_resfusions_target() {
    let fx = fixture();
    let res = &fx["resfusion"];
    let weights = vec_of(&fx["resnoise_weights"]);
    let betas = vec_of(&res["truncated_betas"]);
    let path = Resfusion::linear_pro(12).unwrap();
    let x0 = row(&[0.2, -0.4, 0.9]);
    let y = row(&[0.5, 0.1, 0.7]);
    let eps = row(&[-1.1, 0.3, 0.6]);
    let r = &y - &x0;
    let mut abar = 1.0;
    for (n, (&beta, &kappa)) in betas.iter().zip(&weights).enumerate() {
        abar *= 1.0 - beta;
        let t = if n + 1 == betas.len() { path.acceleration_point() } else { (n + 1) as f64 / 12.0 };
        let x = &(&x0 * abar.sqrt() + &r * (1.0 - abar.sqrt())) + &eps * (1.0 - abar).sqrt();
        let p = path.point(t);
        let ours = &(&x0 * p.alpha + &eps * p.sigma) + &y * p.gamma;
        assert!(max_diff(&x, &ours) < 1e-12, "step {n}: path ≠ Resfusion");
        assert!((path.resnoise_weight(t) - kappa).abs() < 1e-12, "step {n}: κ {} vs {kappa}", path.resnoise_weight(t));
        let at = At::new(&path, t, &x, Some(&y));
        let want = &eps + &r * kappa;
        match Prediction::from_data(Parameterization::Resnoise, &x0, None, &at).unwrap() {
            Prediction::Resnoise(got) => assert!(max_diff(&got, &want) < 1e-10, "step {n}"),
            other => panic!("{other:?}"),
        }
        let (xb, eb) = Prediction::Resnoise(want).into_both(&at).unwrap();
        assert!(max_diff(&xb, &x0) < TOL && max_diff(&eb, &eps) < TOL, "step {n}: back to (x0, ε)");
    }
}

/// With T = 12 (linear-pro) the acceleration point is the reference's step T′ = 5: √ᾱ first drops to ½ in the
/// fifth step; the path starts there with α = 0, γ = ½, σ = √¾, i.e. at `√ᾱ·y + √(1 − ᾱ)·ε`.
#[test]
fn resfusion_acceleration_point_of_t12_is_step_5() {
    let fx = fixture();
    let res = &fx["resfusion"];
    assert_eq!(res["t_acc_step"].as_u64(), Some(5));
    let path = Resfusion::linear_pro(12).unwrap();
    let t_acc = path.acceleration_point();
    assert!(t_acc > 4.0 / 12.0 && t_acc <= 5.0 / 12.0, "T′ = {t_acc}");
    assert_eq!(path.table().step_of_t(t_acc).ceil() as usize + 1, 5);
    assert!((t_acc - res["t_acc_cont"].as_f64().unwrap()).abs() < 1e-12);
    let p = path.point(t_acc);
    assert!(p.alpha.abs() < 1e-12 && (p.gamma - 0.5).abs() < 1e-12 && (p.sigma - 0.75f64.sqrt()).abs() < 1e-12);
    assert_eq!(path.t_range().1, t_acc);
}

/// RDDM's model with two independent outputs (SM-Res-N): `I_res = a·x + b·y + c·t`, `ε = d·x + e·y`.
struct LinearRddm {
    m: [f64; 5],
    mode: Parameterization,
}

impl Denoiser for LinearRddm {
    fn parameterization(&self) -> Parameterization {
        self.mode
    }
    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Prediction> {
        let y = cond.anchor.as_ref().unwrap();
        let [a, b, c, d, e] = self.m;
        let residual = x * a + y * b + c * t;
        Ok(match self.mode {
            Parameterization::Residual => Prediction::Residual(residual),
            _ => Prediction::ResidualNoise { residual, noise: x * d + y * e },
        })
    }
}

fn run(solver: &str, path: &dyn NoisePath, model: &dyn Denoiser, y: &Tensor, x: &Tensor, times: Vec<f64>) -> Tensor {
    let solver = build_solver(solver, &SolverOptions::default()).unwrap();
    let steps = times.len();
    let grid = GridSpec::new(Spacing::Custom { times }, End::Zero);
    let cond = Conditioning::with_anchor(y.shallow_clone());
    sample(solver.as_ref(), path, model, &cond, x, &grid, Budget::Steps(steps), &mut NoNoise, &mut ()).unwrap().x
}

/// RDDM's deterministic sampler (fixtures: T 10 and 1000, sum_scale 0.01 and 1, 2/5/10 steps, SM-Res and SM-Res-N)
/// is core's `rddm` solver on the `rddm` path; for SM-Res (consistent residual and noise) it is exactly `ddim`.
#[test]
fn rddm_sampler_matches_reference_fixture() {
    let fx = fixture();
    let y = row(&vec_of(&fx["y"]));
    let noise = row(&vec_of(&fx["rddm_noise"]));
    let m = &fx["rddm_model"];
    let coef = ["a", "b", "c", "d", "e"].map(|k| m[k].as_f64().unwrap());
    let cases = fx["rddm"].as_array().unwrap();
    assert_eq!(cases.len(), 18);
    for case in cases {
        let (tt, s) = (case["T"].as_u64().unwrap() as usize, case["sum_scale"].as_f64().unwrap());
        let mode =
            if case["mode"] == "residual" { Parameterization::Residual } else { Parameterization::ResidualNoise };
        let path = Rddm::new(tt, s).unwrap();
        let model = LinearRddm { m: coef, mode };
        let x = &y + &noise * s.sqrt();
        let times = vec_of(&case["times"]);
        let want = row(&vec_of(&case["out"]));
        let got = run("rddm", &path, &model, &y, &x, times.clone());
        assert!(max_diff(&got, &want) < TOL, "{case}: rddm off by {}", max_diff(&got, &want));
        if mode == Parameterization::Residual {
            let ddim = run("ddim", &path, &model, &y, &x, times);
            assert!(max_diff(&ddim, &want) < TOL, "{case}: ddim ≠ RDDM for SM-Res: {}", max_diff(&ddim, &want));
        }
    }
}

/// The same statement against a transcription of RDDM's update written here (not via the fixture): SM-Res with
/// T = 50, 7 steps, on the reference's integer times; `ddim` agrees with it.
#[test]
fn rddm_deterministic_is_ddim_for_sm_res() {
    let (tt, s, steps) = (50usize, 0.3, 7usize);
    let a_sum: f64 = (1..=tt).map(|i| i as f64).sum();
    let abar: Vec<f64> =
        (0..tt).scan(0.0, |acc, n| Some(*acc + (tt - n) as f64 / a_sum).inspect(|v| *acc = *v)).collect();
    let bbar: Vec<f64> = (0..tt)
        .scan(0.0, |acc, n| Some(*acc + s * (n + 1) as f64 / a_sum).inspect(|v| *acc = *v))
        .map(f64::sqrt)
        .collect();
    let y = row(&[0.3, -0.2, 0.8]);
    let res_of = |x: &Tensor, t: f64| x * 0.2 + &y * 0.5 - 0.1 * t;
    let mut x = &y + row(&[0.7, -0.1, -1.4]) * s.sqrt();
    let x_start = x.shallow_clone();
    let times: Vec<i64> = (0..=steps).map(|k| (-1.0 + k as f64 * tt as f64 / steps as f64) as i64).rev().collect();
    for w in times.windows(2) {
        let (t, tn) = (w[0] as usize, w[1]);
        let res = res_of(&x, (t + 1) as f64 / tt as f64);
        let eps = (&x - &y + &res * (1.0 - abar[t])) / bbar[t];
        x = if tn < 0 {
            &y - &res
        } else {
            &x - &res * (abar[t] - abar[tn as usize]) - &eps * (bbar[t] - bbar[tn as usize])
        };
    }
    let path = Rddm::new(tt, s).unwrap();
    let model = FnDenoiser::new(Parameterization::Residual, |x: &Tensor, t: f64, c: &Conditioning| {
        Ok(x * 0.2 + c.anchor.as_ref().unwrap() * 0.5 - 0.1 * t)
    });
    let grid_times: Vec<f64> = times.iter().filter(|&&t| t >= 0).map(|&t| (t + 1) as f64 / tt as f64).collect();
    for solver in ["rddm", "ddim"] {
        let got = run(solver, &path, &model, &y, &x_start, grid_times.clone());
        assert!(max_diff(&got, &x) < TOL, "{solver}: {}", max_diff(&got, &x));
    }
}

/// Resfusion's accelerated 5-step ancestral sampler (T = 12, resnoise target, recorded noise) is core's
/// `resfusion` solver on the Resfusion path, started at T′ from `√ᾱ·y + √(1 − ᾱ)·z`.
#[test]
fn resfusion_sampler_matches_reference_fixture() {
    let fx = fixture();
    let res = &fx["resfusion"];
    let y = row(&vec_of(&fx["y"]));
    let m = &fx["resfusion_model"];
    let [a, b, c] = ["a", "b", "c"].map(|k| m[k].as_f64().unwrap());
    let path = Resfusion::linear_pro(12).unwrap();
    let noise: Vec<Tensor> = res["noise"].as_array().unwrap().iter().map(|z| row(&vec_of(z))).collect();
    let start = path.point(path.acceleration_point());
    let x = &(&y * start.gamma) + &noise[0] * start.sigma;
    assert!(max_diff(&x, &row(&vec_of(&res["start"]))) < 1e-12, "start ≠ √ᾱ·y + √(1 − ᾱ)·z");
    let model = FnDenoiser::new(Parameterization::Resnoise, move |x: &Tensor, t: f64, cond: &Conditioning| {
        Ok(x * a + cond.anchor.as_ref().unwrap() * b + c * t)
    });
    let times = vec_of(&res["times"]);
    assert_eq!(times.len(), 5);
    assert_eq!(times[0], path.acceleration_point());
    let solver = build_solver("resfusion", &SolverOptions::default()).unwrap();
    let grid = GridSpec::new(Spacing::Custom { times }, End::Zero);
    let cond = Conditioning::with_anchor(y.shallow_clone());
    let mut fixed = FixedNoise::new(noise[1..].iter().map(|z| z.shallow_clone()).collect());
    let out = sample(solver.as_ref(), &path, &model, &cond, &x, &grid, Budget::Steps(5), &mut fixed, &mut ()).unwrap();
    let want = row(&vec_of(&res["out"]));
    assert_eq!(out.nfe, 5);
    assert!(max_diff(&out.x, &want) < TOL, "resfusion off by {}", max_diff(&out.x, &want));
    // Other paths are refused with a reason.
    let rddm = Rddm::default();
    let err = sample(
        solver.as_ref(),
        &rddm,
        &model,
        &cond,
        &x,
        &GridSpec::new(Spacing::UniformT, End::Zero),
        Budget::Steps(3),
        &mut NoNoise,
        &mut (),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("α = 1 − 2γ"), "{err}");
}
