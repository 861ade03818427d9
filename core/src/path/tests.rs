use std::sync::Arc;

use super::*;

/// Every path kind with its defaults, plus the table variants.
pub(crate) fn all_paths() -> Vec<Arc<dyn NoisePath>> {
    let mut paths: Vec<Arc<dyn NoisePath>> =
        PathSpec::KINDS.iter().map(|k| PathSpec::default_of(k).unwrap().build().unwrap()).collect();
    for schedule in [BetaSchedule::ScaledLinear { start: 0.00085, end: 0.012 }, BetaSchedule::SquaredCosCapV2] {
        paths.push(Arc::new(VpTable::from_schedule(schedule, 1000).unwrap()));
    }
    for schedule in [ThetaSchedule::Constant, ThetaSchedule::Linear] {
        paths.push(Arc::new(IrSde::new(schedule, 100, 10.0, 0.01).unwrap()));
    }
    paths.push(Arc::new(Resfusion::cosine_pro(50).unwrap()));
    paths
}

/// Interior test times, kept off the knots of tabulated paths (knots sit at multiples of 1/N).
fn interior_times(p: &dyn NoisePath) -> Vec<f64> {
    let (lo, hi) = p.t_range();
    [0.0123, 0.137, 0.3137, 0.5071, 0.7377, 0.9513].iter().map(|u| lo + (hi - lo) * u).collect()
}

fn central_diff(f: impl Fn(f64) -> f64, t: f64) -> f64 {
    let h = 1e-6 * t.abs().max(1e-3);
    (f(t + h) - f(t - h)) / (2.0 * h)
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + rel * a.abs().max(b.abs())
}

#[test]
fn derivatives_match_finite_differences() {
    for p in all_paths() {
        for t in interior_times(p.as_ref()) {
            for (what, exact, f) in [
                ("alpha", p.d_alpha(t), Box::new(|s| p.alpha(s)) as Box<dyn Fn(f64) -> f64>),
                ("sigma", p.d_sigma(t), Box::new(|s| p.sigma(s))),
                ("gamma", p.d_gamma(t), Box::new(|s| p.gamma(s))),
            ] {
                let fd = central_diff(f, t);
                assert!(
                    close(exact, fd, 1e-5, 1e-8),
                    "{}: d{what}/dt at t={t}: analytic {exact}, numeric {fd}",
                    p.name()
                );
            }
        }
    }
}

#[test]
fn lambda_is_decreasing_and_inverts() {
    for p in all_paths() {
        let (lo, hi) = p.t_range();
        let mut prev = f64::INFINITY;
        for i in 0..=200 {
            let t = lo + (hi - lo) * i as f64 / 200.0;
            let l = p.lambda(t);
            assert!(l < prev || (l == f64::NEG_INFINITY && i == 200), "{}: λ not decreasing at t={t}", p.name());
            prev = l;
        }
        for t in interior_times(p.as_ref()) {
            let back = p.t_of_lambda(p.lambda(t));
            assert!(close(back, t, 1e-9, 1e-12), "{}: t(λ(t)) = {back}, t = {t}", p.name());
        }
    }
}

#[test]
fn sde_form_is_consistent_with_the_marginals() {
    // g² = dσ²/dt − 2fσ² must be ≥ 0 for a valid forward SDE, and f = d ln α/dt.
    for p in all_paths() {
        for t in interior_times(p.as_ref()) {
            assert!(p.diffusion2(t) > 0.0, "{}: g²({t}) = {}", p.name(), p.diffusion2(t));
            let f_fd = central_diff(|s| p.alpha(s).ln(), t);
            assert!(close(p.drift(t), f_fd, 1e-5, 1e-8), "{}: f({t})", p.name());
        }
    }
}

#[test]
fn vp_linear_matches_the_score_sde() {
    let p = VpLinear::default();
    for t in [0.01, 0.3, 0.9] {
        let beta = 0.1 + t * (20.0 - 0.1);
        assert!(close(p.drift(t), -beta / 2.0, 1e-12, 0.0));
        assert!(close(p.diffusion2(t), beta, 1e-9, 0.0), "g² {} vs β {beta}", p.diffusion2(t));
        let log_mean = -0.25 * t * t * (20.0 - 0.1) - 0.5 * t * 0.1;
        assert!(close(p.alpha(t), log_mean.exp(), 1e-14, 0.0));
        assert!(close(p.alpha(t).powi(2) + p.sigma(t).powi(2), 1.0, 1e-14, 0.0));
    }
    let sub = SubVp::default();
    for t in [0.05, 0.5] {
        assert!(close(sub.sigma(t), 1.0 - p.alpha(t).powi(2), 1e-14, 0.0));
        // sub-VP diffusion: β(t)·(1 − e^{−2∫β}).
        let beta = 0.1 + t * (20.0 - 0.1);
        assert!(close(sub.diffusion2(t), beta * (1.0 - p.alpha(t).powi(4)), 1e-9, 0.0));
    }
}

#[test]
fn discrete_table_matches_cumprod() {
    let betas = BetaSchedule::DDPM.betas(1000);
    assert!(close(betas[0], 1e-4, 1e-12, 0.0) && close(betas[999], 0.02, 1e-12, 0.0));
    let p = VpTable::from_schedule(BetaSchedule::DDPM, 1000).unwrap();
    let mut abar = 1.0;
    for (k, b) in betas.iter().enumerate() {
        abar *= 1.0 - b;
        let t = (k + 1) as f64 / 1000.0;
        assert!(close(p.alpha(t), abar.sqrt(), 1e-12, 0.0), "k={k}");
    }
    // squaredcos_cap_v2: ᾱ_k/ᾱ_0-ratios follow the cosine and betas are capped at 0.999.
    let cos = BetaSchedule::SquaredCosCapV2.betas(1000);
    assert!(cos.iter().all(|b| *b > 0.0 && *b <= 0.999));
    assert!(close(cos[999], 0.999, 0.0, 1e-12));
}

#[test]
fn cosine_and_ve_and_edm_and_flow_closed_forms() {
    let c = VpCosine::default();
    let f = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos();
    assert!(close(c.alpha(0.4), f(0.4) / f(0.0), 1e-14, 0.0));
    // dpm-solver's cosine T = 0.9946 sits near λ = −5.
    assert!((c.lambda(0.9946) + 5.0).abs() < 0.5, "{}", c.lambda(0.9946));
    let ve = Ve::default();
    assert!(close(ve.sigma(0.5), 0.01 * (50.0f64 / 0.01).sqrt(), 1e-14, 0.0));
    assert!(close(ve.diffusion2(0.5), 2.0 * ve.sigma(0.5).powi(2) * (5000.0f64).ln(), 1e-12, 0.0));
    let edm = Edm::default();
    assert_eq!((edm.sigma(3.0), edm.alpha(3.0)), (3.0, 1.0));
    assert!(close(edm.t_of_lambda(-(3.0f64.ln())), 3.0, 1e-15, 0.0));
    let rf = RectifiedFlow::default();
    assert_eq!(rf.lambda(1.0), f64::NEG_INFINITY);
    assert!(close(rf.t_of_lambda(0.0), 0.5, 1e-15, 0.0));
}

#[test]
fn ouve_matches_sgmse_check_values() {
    let p = Ouve::default();
    assert!((p.sigma(1.0) - 0.388983).abs() < 5e-7, "σ(1) = {}", p.sigma(1.0));
    assert!((p.sigma(0.03) - 0.018830).abs() < 5e-7, "σ(0.03) = {}", p.sigma(0.03));
    let p48 = Ouve::new(2.0, 0.1, 1.0, 0.03, 1.0).unwrap();
    assert!((p48.sigma(1.0) - 0.73148).abs() < 5e-6, "48 kHz σ(1) = {}", p48.sigma(1.0));
    for t in [0.1, 0.5, 1.0] {
        // dx = θ(y − x)dt + g dw with g(t) = σmin(σmax/σmin)^t √(2 ln(σmax/σmin)).
        assert!(close(p.drift(t), -1.5, 1e-12, 0.0));
        assert!(close(p.anchor_drift(t), 1.5, 1e-12, 0.0));
        let g = 0.05 * 10f64.powf(t) * (2.0 * 10f64.ln()).sqrt();
        assert!(close(p.diffusion2(t), g * g, 1e-10, 0.0), "g² at {t}");
        assert!(close(p.alpha(t) + p.gamma(t), 1.0, 1e-15, 0.0));
    }
}

#[test]
fn sbve_is_a_bridge_from_data_to_y() {
    let p = Sbve::default();
    assert!(p.alpha(1.0).abs() < 1e-15 && p.sigma(1.0).abs() < 1e-15 && close(p.gamma(1.0), 1.0, 1e-15, 0.0));
    assert!(close(p.alpha(1e-9), 1.0, 1e-8, 0.0) && p.sigma(1e-9) < 1e-4);
    // Variance of the bridge: σ_t²·σ̄_t²/σ_1² with f = 0, g² = c·k^{2t}.
    let (k, c) = (2.6f64, 0.4);
    let s2 = |t: f64| c * (k.powf(2.0 * t) - 1.0) / (2.0 * k.ln());
    let t = 0.4;
    assert!(close(p.sigma(t).powi(2), s2(t) * (s2(1.0) - s2(t)) / s2(1.0), 1e-12, 0.0));
}

#[test]
fn ir_sde_matches_the_reference_tables() {
    for schedule in [ThetaSchedule::Constant, ThetaSchedule::Linear, ThetaSchedule::Cosine] {
        let p = IrSde::new(schedule, 100, 10.0, 0.01).unwrap();
        let lambda = 10.0 / 255.0;
        assert!(close(p.alpha(1.0), 0.01, 1e-12, 0.0), "{schedule:?}: α(T) = eps");
        assert!(close(p.sigma(1.0), lambda * (1.0 - 1e-4f64).sqrt(), 1e-12, 0.0));
        // Reference: mean μ + (x0 − μ)·exp(−θ̄_i·dt) at integer steps with θ̄ = cumsum(θ) − θ_0.
        let thetas = schedule.thetas(100);
        let cums: Vec<f64> = thetas
            .iter()
            .scan(0.0, |a, th| {
                *a += th;
                Some(*a - thetas[0])
            })
            .collect();
        let dt = -(0.01f64).ln() / cums[100];
        for i in [1usize, 17, 50, 99] {
            assert!(close(p.alpha(i as f64 / 100.0), (-cums[i] * dt).exp(), 1e-12, 0.0), "{schedule:?} step {i}");
        }
        // σ_t² = 2λ²θ_t: on step i (between i − 1 and i), g² = 2λ²·θ_i·dt·T per unit of t.
        let t = 0.4137;
        let i = (t * 100.0f64).ceil() as usize;
        assert!(close(p.diffusion2(t), 2.0 * lambda * lambda * thetas[i] * dt * 100.0, 1e-10, 0.0));
    }
}

#[test]
fn rddm_matches_reference_cumsums() {
    let (n, s) = (1000usize, 0.01);
    let p = Rddm::new(n, s).unwrap();
    let scale = 0.5 * (n * (n + 1)) as f64;
    let (mut a_cum, mut b2_cum) = (0.0, 0.0);
    for k in 0..n {
        a_cum += (n - k) as f64 / scale; // "decreased"
        b2_cum += s * (k + 1) as f64 / scale; // "increased"
        if k % 97 == 0 || k == n - 1 {
            let t = (k + 1) as f64 / n as f64;
            assert!(close(p.gamma(t), a_cum, 1e-12, 1e-15), "k={k}");
            assert!(close(p.sigma(t), b2_cum.sqrt(), 1e-12, 1e-15), "k={k}");
        }
    }
    assert!(p.alpha(1.0).abs() < 1e-12 && close(p.sigma(1.0), s.sqrt(), 1e-12, 0.0));
}

#[test]
fn resfusion_acceleration_point() {
    let p = Resfusion::linear_pro(12).unwrap();
    let t_acc = p.acceleration_point();
    // The reference truncates T = 12 at step index 4 (T′ = 5 steps): √ᾱ crosses ½ between steps 4 and 5.
    assert!(t_acc > 4.0 / 12.0 && t_acc < 5.0 / 12.0, "{t_acc}");
    assert!(p.alpha(t_acc).abs() < 1e-12 && close(p.gamma(t_acc), 0.5, 1e-12, 0.0));
    assert!(close(p.sigma(t_acc), 0.75f64.sqrt(), 1e-12, 0.0));
    let t = 2.5 / 12.0;
    let a = p.table().alpha(t);
    assert!(close(p.alpha(t), 2.0 * a - 1.0, 1e-14, 0.0) && close(p.gamma(t), 1.0 - a, 1e-14, 0.0));
}

#[test]
fn specs_parse_and_reject_bad_input() {
    let spec: PathSpec = serde_json::from_str(r#"{"kind": "edm", "sigma_min": 0.002, "sigma_max": 80.0}"#).unwrap();
    assert_eq!(spec, PathSpec::Edm { sigma_min: 0.002, sigma_max: 80.0 });
    let err = serde_json::from_str::<PathSpec>(r#"{"kind": "edn"}"#).unwrap_err().to_string();
    assert!(err.contains("unknown variant") && err.contains("edm"), "{err}");
    let err = serde_json::from_str::<PathSpec>(r#"{"kind": "edm", "sigma_mn": 1}"#).unwrap_err().to_string();
    assert!(err.contains("sigma_mn"), "{err}");
    let err = PathSpec::Edm { sigma_min: 1.0, sigma_max: 0.5 }.build().unwrap_err().to_string();
    assert!(err.contains("sigma_min < sigma_max"), "{err}");
    assert!(PathSpec::default_of("nope").unwrap_err().to_string().contains("vp_linear"));
}

/// `BatchPoint` is the scalar `point` at every element, for every path kind, in the input's shape and kind.
#[test]
fn batch_points_are_the_scalar_points() {
    for kind in PathSpec::KINDS {
        let path = PathSpec::default_of(kind).unwrap().build().unwrap();
        let (lo, hi) = path.t_range();
        let ts: Vec<f64> = (0..6).map(|i| lo + (hi - lo) * i as f64 / 5.0).collect();
        let t = tch::Tensor::from_slice(&ts).view([2, 3, 1]);
        let p = BatchPoint::at(path.as_ref(), &t).unwrap();
        assert_eq!(p.alpha.size(), [2, 3, 1]);
        assert_eq!(p.sigma.kind(), tch::Kind::Double);
        for (i, &s) in ts.iter().enumerate() {
            let want = path.point(s);
            let at = |x: &tch::Tensor| x.view([-1]).double_value(&[i as i64]);
            assert_eq!(
                (at(&p.alpha), at(&p.gamma), at(&p.sigma)),
                (want.alpha, want.gamma, want.sigma),
                "{kind} t {s}"
            );
        }
        let single = BatchPoint::at(path.as_ref(), &tch::Tensor::from_slice(&[hi as f32])).unwrap();
        assert_eq!(single.sigma.kind(), tch::Kind::Float);
    }
}
