//! Stochastic samplers: weak error against exact Gaussian targets (with a statistical bound in the sample count),
//! strong order on a shared Brownian path, batch invariance, mixture MMD falling with steps, bad input.

use std::sync::Arc;

use diffuse_core::bench::{mmd2, rms_error};
use diffuse_core::denoiser::Conditioning;
use diffuse_core::exact::GaussianMixture;
use diffuse_core::path::{NoisePath, PathSpec};
use diffuse_core::seed::SampleSeeds;
use diffuse_core::solvers::{BrownianTree, Budget, NoiseSource, SeededNoise, SolverOptions, build_solver, sample};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use tch::{Device, Kind, Tensor};

const SAMPLERS: &[&str] = &[
    "ddpm",
    "ddim-eta:eta=0.5",
    "euler-maruyama",
    "pc",
    "pc:predictor=euler_maruyama,corrector=langevin,snr=0.1",
    "pc:predictor=ancestral,corrector=none",
    "pc:predictor=reverse_diffusion_kernel,corrector=ald,snr=0.2,steps=2",
    "sde-dpm++2m",
    "sde-dpm++3m:eta=0.5",
    "edm-churn:churn=10",
];

struct Case {
    path: Arc<dyn NoisePath>,
    model: GaussianMixture,
    cond: Conditioning,
    x_start: Tensor,
    grid: GridSpec,
}

fn gaussian_case(kind: &str, n: usize, mean: &[f64], std: f64) -> Case {
    let path = PathSpec::default_of(kind).unwrap().build().unwrap();
    let dim = mean.len() as i64;
    let model = GaussianMixture::gaussian(mean.to_vec(), std, path.clone()).unwrap();
    let mu = Tensor::from_slice(&vec![0.8; mean.len()]).view([1, dim]).expand([n as i64, dim], false).contiguous();
    let start = path.point(path.t_range().1);
    let x_start = model.sample_marginal(&start, &SampleSeeds::new(100, 0, n), Some(&mu)).unwrap();
    // EDM's time is σ itself: space it as EDM does (uniform σ would put one step across the whole data scale).
    let spacing = if kind == "edm" { Spacing::Karras { rho: 7.0 } } else { Spacing::UniformT };
    Case { path, model, cond: Conditioning::with_anchor(mu), x_start, grid: GridSpec::new(spacing, End::Zero) }
}

fn run(case: &Case, name: &str, steps: usize, noise: &mut dyn NoiseSource) -> Tensor {
    let solver = build_solver(name, &SolverOptions::default()).unwrap();
    sample(
        solver.as_ref(),
        case.path.as_ref(),
        &case.model,
        &case.cond,
        &case.x_start,
        &case.grid,
        Budget::Steps(steps),
        noise,
        &mut (),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
    .x
}

/// Mean and variance of every sampler's output match the exact Gaussian target within 5 standard errors (plus a
/// small allowance for the discretization bias at 200 steps), on VP, EDM and OUVE with an anchor. Sixteen
/// dimensions, because the Langevin corrector's step uses per-sample norms, which only concentrate in several
/// dimensions (as for real data).
#[test]
fn weak_error_on_gaussian_targets() {
    let n = 2000;
    let mean: Vec<f64> = (0..16).map(|i| 0.6 - 0.08 * i as f64).collect();
    let std = 0.5;
    for kind in ["vp_linear", "ouve", "edm"] {
        let case = gaussian_case(kind, n, &mean, std);
        for name in SAMPLERS {
            if name.starts_with("edm-churn") && kind == "ouve" {
                continue; // EDM churn is defined for paths starting at high noise; OUVE starts at σ/α ≈ 1.7
            }
            let mut noise = SeededNoise::new(SampleSeeds::new(7, 0, n));
            let x = run(&case, name, 200, &mut noise);
            let m: Vec<f64> = Vec::try_from(x.mean_dim(Some(&[0i64][..]), false, Kind::Double)).unwrap();
            let centered = &x - x.mean_dim(Some(&[0i64][..]), true, Kind::Double);
            let cov = centered.transpose(0, 1).matmul(&centered) / (n as f64 - 1.0);
            let var: Vec<f64> = Vec::try_from(cov.diagonal(0, 0, 1)).unwrap();
            let off = f64::try_from((&cov - cov.diagonal(0, 0, 1).diag(0)).abs().max()).unwrap();
            let se_mean = std / (n as f64).sqrt();
            let se_var = std * std * (2.0 / n as f64).sqrt();
            let bias = 0.02;
            for d in 0..mean.len() {
                assert!(
                    (m[d] - mean[d]).abs() < 5.0 * se_mean + bias,
                    "{kind}/{name}: mean[{d}] = {} vs {}",
                    m[d],
                    mean[d]
                );
                assert!(
                    (var[d] - std * std).abs() < 5.0 * se_var + bias,
                    "{kind}/{name}: var[{d}] = {} vs {}",
                    var[d],
                    std * std
                );
            }
            assert!(off < 5.0 * std * std / (n as f64).sqrt() + bias, "{kind}/{name}: covariance {off}");
        }
    }
}

/// A deliberately wrong model (the target's mean shifted by 0.2) fails the same check: the bound can fail.
#[test]
fn weak_error_check_detects_a_wrong_model() {
    let n = 2000;
    let case = gaussian_case("vp_linear", n, &[0.6, -0.4], 0.5);
    let mut noise = SeededNoise::new(SampleSeeds::new(7, 0, n));
    let x = run(&case, "ddpm", 200, &mut noise);
    let m: Vec<f64> = Vec::try_from(x.mean_dim(Some(&[0i64][..]), false, Kind::Double)).unwrap();
    assert!((m[0] - 0.8).abs() > 5.0 * 0.5 / (n as f64).sqrt() + 0.02, "a shifted target must be detected");
}

/// Strong error on one Brownian path shared across step counts (reference: SDE-DPM-Solver++(2M) with 4096 steps on the
/// same path; it agrees with Euler–Maruyama at 32768 steps to 5e-5). Euler–Maruyama and DDPM have strong order 1
/// (additive noise); SDE-DPM-Solver++(2M) measures 1.3–1.5 here (its noise is the normalized Brownian increment, so
/// 1 is its asymptotic order) and is the most accurate of the three.
#[test]
fn strong_order_on_a_shared_brownian_path() {
    let n = 64;
    let case = {
        let mut c = gaussian_case("vp_linear", n, &[0.5, -0.5], 0.5);
        c.grid = GridSpec::new(Spacing::UniformT, End::Time(0.05));
        c.grid.t_start = Some(0.8);
        let p = c.path.point(0.8);
        c.x_start = c.model.sample_marginal(&p, &SampleSeeds::new(3, 0, n), c.cond.anchor.as_ref()).unwrap();
        c
    };
    let tree = || BrownianTree::new(SampleSeeds::new(11, 0, n), 0.0, 1.0, 22).unwrap();
    let reference = run(&case, "sde-dpm++2m", 4096, &mut tree());
    let mut finest = Vec::new();
    for (name, lo, hi) in [("euler-maruyama", 0.85, 1.15), ("ddpm", 0.85, 1.15), ("sde-dpm++2m", 1.1, 1.7)] {
        let errs: Vec<f64> =
            [64, 128, 256].iter().map(|&s| rms_error(&run(&case, name, s, &mut tree()), &reference).unwrap()).collect();
        let slope = (errs[0] / errs[2]).ln() / 4f64.ln();
        assert!(slope > lo && slope < hi, "{name}: strong order {slope:.2} not in ({lo}, {hi}); errors {errs:?}");
        finest.push(errs[2]);
    }
    assert!(finest[2] < finest[0] && finest[2] < finest[1], "{finest:?}");
}

/// The same seed gives the same sample alone or inside a batch of 8, for every sampler.
#[test]
fn batch_invariance() {
    let case8 = gaussian_case("vp_linear", 8, &[0.3, 0.1], 0.7);
    let mut case1 = gaussian_case("vp_linear", 1, &[0.3, 0.1], 0.7);
    case1.x_start = case8.x_start.narrow(0, 5, 1);
    for name in SAMPLERS {
        let a = run(&case8, name, 12, &mut SeededNoise::new(SampleSeeds::new(21, 0, 8))).narrow(0, 5, 1);
        let b = run(&case1, name, 12, &mut SeededNoise::new(SampleSeeds::new(21, 5, 1)));
        let d = f64::try_from((a - b).abs().max()).unwrap();
        assert!(d < 1e-12, "{name}: sample 5 differs alone vs in a batch by {d}");
    }
}

/// On a two-component mixture, MMD² to exact samples falls as steps grow.
#[test]
fn mixture_mmd_falls_with_steps() {
    let n = 1500;
    let path = PathSpec::default_of("edm").unwrap().build().unwrap();
    let model =
        GaussianMixture::new(vec![0.3, 0.7], vec![vec![1.5, 0.0], vec![-1.0, 0.5]], vec![0.2, 0.3], path.clone())
            .unwrap();
    let start = path.point(80.0);
    let x_start = model.sample_marginal(&start, &SampleSeeds::new(5, 0, n), None).unwrap();
    let target = model.sample_data(&SampleSeeds::new(6, 0, n));
    let case = Case {
        path,
        model,
        cond: Conditioning::none(),
        x_start,
        grid: GridSpec::new(Spacing::Karras { rho: 7.0 }, End::Zero),
    };
    for name in ["ddpm", "sde-dpm++2m", "edm-churn:churn=10", "pc:predictor=ancestral,corrector=ald,snr=0.1"] {
        let mmds: Vec<f64> = [2, 4, 8, 32]
            .iter()
            .map(|&s| {
                mmd2(&run(&case, name, s, &mut SeededNoise::new(SampleSeeds::new(9, 0, n))), &target, None).unwrap()
            })
            .collect();
        // The unbiased MMD² estimate of two samples of 1500 has a standard deviation of about 1e-3.
        assert!(mmds[3] < 0.2 * mmds[0], "{name}: {mmds:?}");
        assert!(mmds[3] < 5e-3, "{name}: {mmds:?}");
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let opts = SolverOptions::default();
    let cases = [
        ("ddim-eta:eta=-0.1", "eta"),
        ("pc:snr=0", "snr"),
        ("pc:corrector=ald,steps=0", "corrector steps"),
        ("pc:foo=1", "unknown parameter 'foo'"),
        ("dpm++2m:eta=1", "takes no parameters"),
        ("pc:predictor=heun", "predictor"),
        ("pc:snr", "key=value"),
    ];
    for (spec, needle) in cases {
        let e = build_solver(spec, &opts).err().unwrap_or_else(|| panic!("{spec} accepted")).to_string();
        assert!(e.contains(needle), "{spec}: {e}");
    }
    let x = Tensor::zeros([2, 3], (Kind::Double, Device::Cpu));
    let mut noise = SeededNoise::new(SampleSeeds::new(0, 0, 4));
    assert!(noise.normal(0, &x).unwrap_err().to_string().contains("batch of 4"));
}
