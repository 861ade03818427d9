//! Issue 21, item 4: DPM-Solver-v3. The empirical model statistics are exact where they are known (a Gaussian,
//! whose ε̂ is linear: l = σ²/(α²c + σ²), f constant, s = 0, b = f′), the solver is then exact up to the
//! statistics' grid, it reduces to DDIM with the degenerate statistics, and with statistics estimated from a
//! mixture model it converges at its order.

use std::sync::Arc;

use diffuse_core::denoiser::Conditioning;
use diffuse_core::exact::GaussianMixture;
use diffuse_core::path::{NoisePath, PathSpec, Point};
use diffuse_core::seed::SampleSeeds;
use diffuse_core::solvers::ems::estimate;
use diffuse_core::solvers::{
    Budget, DpmSolverV3, EmpiricalStats, EmsSettings, LowerOrderFinal, NoNoise, Pooling, Run, Solver, SolverOptions,
    Toggle, build_solver, sample,
};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use tch::Tensor;

fn edm() -> Arc<dyn NoisePath> {
    PathSpec::default_of("edm").unwrap().build().unwrap()
}

/// λ from −4 to 3 on the EDM path (σ from e⁴ to e⁻³).
fn ends(path: &dyn NoisePath) -> (Point, Point) {
    (path.point(path.t_of_lambda(-4.0)), path.point(path.t_of_lambda(3.0)))
}

fn stats_of(model: &GaussianMixture, path: &dyn NoisePath, samples: usize, settings: &EmsSettings) -> EmpiricalStats {
    let (start, end) = ends(path);
    let x = model.sample_marginal(&start, &SampleSeeds::new(99, 0, samples), None).unwrap();
    let cond = Conditioning::none();
    let (mut noise, mut observer) = (NoNoise, ());
    let mut run = Run::new(path, model, &cond, &mut noise, &mut observer);
    estimate(&mut run, &x, &start, &end, settings, &mut |_, _| {}).unwrap()
}

fn v3(stats: EmpiricalStats, order: u32) -> DpmSolverV3 {
    DpmSolverV3::new(Arc::new(stats), "test-statistics".into(), order)
        .unwrap()
        .with_toggles(Toggle::Off, Toggle::Off)
        .with_panel(Some(2e-3))
        .unwrap()
        .with_lower_order_final(LowerOrderFinal::Never)
}

fn grid(path: &dyn NoisePath) -> GridSpec {
    let (start, end) = ends(path);
    GridSpec { t_start: Some(start.t), ..GridSpec::new(Spacing::UniformLambda, End::Time(end.t)) }
}

fn solve(solver: &dyn Solver, path: &dyn NoisePath, model: &GaussianMixture, x: &Tensor, steps: usize) -> Tensor {
    let cond = Conditioning::none();
    sample(solver, path, model, &cond, x, &grid(path), Budget::Steps(steps), &mut NoNoise, &mut ()).unwrap().x
}

fn rms(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).square().mean(tch::Kind::Double).sqrt()).unwrap()
}

#[test]
fn statistics_of_a_gaussian_are_the_exact_ones_and_make_the_solver_exact() {
    let path = edm();
    let (mean, c) = (vec![0.7, -0.4, 1.2], 0.25f64 * 0.25);
    let model = GaussianMixture::gaussian(mean.clone(), 0.25, path.clone()).unwrap();
    let stats = stats_of(&model, path.as_ref(), 8, &EmsSettings { intervals: 400, probes: 1, ..Default::default() });
    let (l, s, b) = stats.values();
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for (i, &lam) in stats.lambdas().iter().enumerate() {
        // EDM: α = 1, σ = e^{−λ}: l = 1/(c·e^{2λ} + 1), f = −l·m, b = f′ = 2c·e^{2λ}/(c·e^{2λ} + 1)²·m.
        let e2 = c * (2.0 * lam).exp();
        let l_exact = 1.0 / (e2 + 1.0);
        let db = 2.0 * e2 / (e2 + 1.0).powi(2);
        for (j, &m) in mean.iter().enumerate() {
            let li = l.double_value(&[i as i64, j as i64]);
            let si = s.double_value(&[i as i64, j as i64]);
            let bi = b.double_value(&[i as i64, j as i64]);
            worst.0 = worst.0.max((li - l_exact).abs());
            worst.1 = worst.1.max(si.abs());
            worst.2 = worst.2.max((bi - db * m).abs() / (db * m.abs()).max(1e-3));
        }
    }
    assert!(worst.0 < 1e-12, "l off by {}", worst.0);
    assert!(worst.1 == 0.0, "s should be 0 where f does not vary, got {}", worst.1);
    assert!(worst.2 < 2e-3, "b off by {} (relative)", worst.2);

    // g is then constant along every trajectory: one first-order step is exact up to the statistics' grid.
    let (start, end) = ends(path.as_ref());
    let x = model.sample_marginal(&start, &SampleSeeds::new(5, 0, 32), None).unwrap();
    let exact = model.flow(&x, &start, &end, None, 1e-11).unwrap();
    let solver = v3(stats, 1);
    let one = rms(&solve(&solver, path.as_ref(), &model, &x, 1), &exact);
    let ddim = rms(
        &solve(build_solver("ddim", &SolverOptions::default()).unwrap().as_ref(), path.as_ref(), &model, &x, 1),
        &exact,
    );
    assert!(one < 1e-4 && one < 1e-3 * ddim, "v3 one step {one:.2e}, ddim {ddim:.2e}");
}

#[test]
fn degenerate_statistics_give_ddim() {
    let path = edm();
    let model =
        GaussianMixture::new(vec![0.5, 0.5], vec![vec![1.0, -0.5], vec![-0.8, 0.4]], vec![0.3, 0.2], path.clone())
            .unwrap();
    let (start, _) = ends(path.as_ref());
    let x = model.sample_marginal(&start, &SampleSeeds::new(6, 0, 16), None).unwrap();
    let solver = v3(EmpiricalStats::degenerate(-4.0, 3.0).unwrap(), 1);
    let ddim = build_solver("ddim", &SolverOptions::default()).unwrap();
    for steps in [1, 4, 9] {
        let a = solve(&solver, path.as_ref(), &model, &x, steps);
        let b = solve(ddim.as_ref(), path.as_ref(), &model, &x, steps);
        // Only the trapezoid sum of ∫e^{λ−λ_s} differs (panels ≤ 2e-3: relative ~ 3e-7).
        assert!(rms(&a, &b) < 1e-6, "{steps} steps: {:.2e}", rms(&a, &b));
    }
}

#[test]
fn converges_at_its_order_with_estimated_statistics() {
    let path = edm();
    let means = vec![vec![1.0, -0.5, 0.3, 0.8], vec![-1.0, 0.6, -0.2, 0.1]];
    let model = GaussianMixture::new(vec![0.4, 0.6], means, vec![0.5, 0.7], path.clone()).unwrap();
    // A fine statistics grid: linear interpolation between nodes leaves an error floor ~ Δλ²·l″.
    let settings = EmsSettings { intervals: 3000, probes: 2, ..Default::default() };
    let stats = Arc::new(stats_of(&model, path.as_ref(), 64, &settings));
    let (start, end) = ends(path.as_ref());
    let x = model.sample_marginal(&start, &SampleSeeds::new(7, 0, 16), None).unwrap();
    let exact = model.flow(&x, &start, &end, None, 1e-12).unwrap();
    let mut report = Vec::new();
    for order in 1..=3u32 {
        let solver = DpmSolverV3::new(stats.clone(), "estimated".into(), order)
            .unwrap()
            .with_toggles(Toggle::Off, Toggle::Off)
            .with_panel(Some(1e-3))
            .unwrap()
            .with_lower_order_final(LowerOrderFinal::Never);
        let errs: Vec<f64> =
            [16, 32, 64].iter().map(|&n| rms(&solve(&solver, path.as_ref(), &model, &x, n), &exact)).collect();
        let slope = (errs[1] / errs[2]).log2();
        report.push(format!("order {order}: {errs:?} slope {slope:.2}"));
        // Multistep warm-up is first order: order 3 is measured ≥ 2.7 (like dpm++3m with the lower-order warm-up).
        let want = if order == 3 { 2.7 } else { order as f64 - 0.3 };
        assert!(slope > want && slope < order as f64 + 0.6, "{}", report.join("; "));
    }
    // The corrector helps at few steps.
    let plain = DpmSolverV3::new(stats.clone(), "estimated".into(), 2).unwrap().with_toggles(Toggle::Off, Toggle::Off);
    let corrected = DpmSolverV3::new(stats, "estimated".into(), 2).unwrap().with_toggles(Toggle::Off, Toggle::On);
    let (p, c) = (
        rms(&solve(&plain, path.as_ref(), &model, &x, 6), &exact),
        rms(&solve(&corrected, path.as_ref(), &model, &x, 6), &exact),
    );
    assert!(c < p, "corrector {c:.2e} vs plain {p:.2e}; {}", report.join("; "));
    eprintln!("{}; 6 steps plain {p:.2e} corrected {c:.2e}", report.join("; "));
}

#[test]
fn statistics_files_round_trip_and_bad_ones_are_named() {
    let dir = std::env::temp_dir().join(format!("diffuse-ems-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ems.safetensors");
    let stats = EmpiricalStats::degenerate(-5.0, 4.0).unwrap().with_metadata("samples", "3");
    stats.write(&file, false).unwrap();
    assert!(stats.write(&file, false).is_err(), "an existing file is not overwritten without force");
    let back = EmpiricalStats::read(&file).unwrap();
    assert_eq!(back.lambdas(), stats.lambdas());
    assert_eq!(back.metadata().get("samples").map(String::as_str), Some("3"));
    // A solver whose run leaves the statistics' range says so, naming the file.
    let solver = build_solver(&format!("dpm-solver-v3:stats={}", file.display()), &SolverOptions::default()).unwrap();
    let path = edm();
    let model = GaussianMixture::gaussian(vec![0.0], 1.0, path.clone()).unwrap();
    let x = Tensor::zeros([2, 1], (tch::Kind::Double, tch::Device::Cpu));
    let cond = Conditioning::none();
    let err = sample(
        solver.as_ref(),
        path.as_ref(),
        &model,
        &cond,
        &x,
        &GridSpec::new(Spacing::Karras { rho: 7.0 }, End::Zero),
        Budget::Steps(5),
        &mut NoNoise,
        &mut (),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("ems.safetensors") && err.contains("cover λ"), "{err}");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a file").unwrap();
    let err = build_solver(&format!("dpm-solver-v3:stats={}", junk.display()), &SolverOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("junk.safetensors"), "{err}");
    assert!(build_solver("dpm-solver-v3", &SolverOptions::default()).err().unwrap().to_string().contains("stats=FILE"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The reference (thu-ml/DPM-Solver-v3, run by `tools/make_v3_fixtures.py`) on a mixture with made-up smooth
/// statistics: its steps fall on statistics nodes, so with no extra quadrature panels every sum is the
/// reference's. The reference casts the step times to float32 (`torch.FloatTensor`), hence the tolerance.
#[test]
fn matches_the_reference_implementation() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dpm_v3.json")).unwrap();
    let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vec1 =
        |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    let mat = |v: &serde_json::Value| -> Tensor {
        let rows: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(vec1).collect();
        let (n, d) = (rows.len() as i64, rows[0].len() as i64);
        Tensor::from_slice(&rows.concat()).view([n, d])
    };
    let path = edm();
    assert_eq!(path.point(80.0).sigma, 80.0, "the fixture's EDM path has σ = t");
    let means: Vec<Vec<f64>> = fx["means"].as_array().unwrap().iter().map(vec1).collect();
    let model = GaussianMixture::new(vec1(&fx["weights"]), means, vec1(&fx["stds"]), path.clone()).unwrap();
    let stats =
        Arc::new(EmpiricalStats::new(vec1(&fx["lambdas"]), mat(&fx["l"]), mat(&fx["s"]), mat(&fx["b"])).unwrap());
    let x = mat(&fx["x_start"]);
    let grid = GridSpec {
        t_start: Some(fx["t_max"].as_f64().unwrap()),
        ..GridSpec::new(Spacing::UniformLambda, End::Time(fx["t_min"].as_f64().unwrap()))
    };
    for case in fx["cases"].as_array().unwrap() {
        let toggle = |key: &str| if case[key].as_bool().unwrap() { Toggle::On } else { Toggle::Off };
        let solver = DpmSolverV3::new(stats.clone(), "fixture".into(), case["order"].as_u64().unwrap() as u32)
            .unwrap()
            .with_toggles(toggle("pseudo"), toggle("corrector"))
            .with_panel(None)
            .unwrap()
            .with_lower_order_final(LowerOrderFinal::Always);
        let steps = case["steps"].as_u64().unwrap() as usize;
        let cond = Conditioning::none();
        let out = sample(&solver, path.as_ref(), &model, &cond, &x, &grid, Budget::Steps(steps), &mut NoNoise, &mut ())
            .unwrap();
        let want = mat(&case["x"]);
        let diff = f64::try_from((&out.x - &want).abs().max()).unwrap();
        assert!(diff < 2e-6, "{case}: off by {diff:.2e}");
        assert_eq!(out.nfe, steps, "one model evaluation per step");
    }
}

#[test]
fn pooled_statistics_broadcast_and_pooling_every_axis_equals_sharing() {
    let path = edm();
    let means = vec![vec![1.0, -0.5, 0.3], vec![-1.0, 0.6, -0.2]];
    let model = GaussianMixture::new(vec![0.4, 0.6], means, vec![0.5, 0.7], path.clone()).unwrap();
    let with = |pooling: Pooling| {
        let settings = EmsSettings { intervals: 60, probes: 2, pooling, ..Default::default() };
        stats_of(&model, path.as_ref(), 16, &settings)
    };
    let (all, axes, each) = (with(Pooling::All), with(Pooling::Axes(vec![0])), with(Pooling::PerCoordinate));
    assert_eq!(all.shape(), Vec::<i64>::new());
    assert_eq!(axes.shape(), vec![1]);
    assert_eq!(each.shape(), vec![3]);
    // l is linear in the probes' products: pooled l = the mean of the per-coordinate l.
    let (l_all, l_axes, l_each) = (all.values().0, axes.values().0, each.values().0);
    assert!(rms(&l_axes.squeeze_dim(1), &l_all) < 1e-12);
    assert!(rms(&l_each.mean_dim(1, false, tch::Kind::Double), &l_all) < 1e-6);
    // Pooling the one axis of these samples is sharing: the same statistics broadcast, the same samples.
    let (start, _) = ends(path.as_ref());
    let x = model.sample_marginal(&start, &SampleSeeds::new(5, 0, 8), None).unwrap();
    let a = solve(&v3(all, 2), path.as_ref(), &model, &x, 6);
    let b = solve(&v3(axes, 2), path.as_ref(), &model, &x, 6);
    assert!(rms(&a, &b) < 1e-6, "{:.2e}", rms(&a, &b));
    // An axis the samples do not have is refused.
    let settings = EmsSettings { intervals: 4, probes: 1, pooling: Pooling::Axes(vec![1]), ..Default::default() };
    let (start, end) = ends(path.as_ref());
    let cond = Conditioning::none();
    let (mut noise, mut observer) = (NoNoise, ());
    let mut run = Run::new(path.as_ref(), &model, &cond, &mut noise, &mut observer);
    let err = estimate(&mut run, &x, &start, &end, &settings, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("pooling axis 1"), "{err}");
}
