//! Statistics of the degradations: noise levels, kernels, exposure curves, seeding.

use super::*;

fn constant(v: f32, h: usize, w: usize) -> Planes {
    Planes::new(3, h, w, vec![v; 3 * h * w]).unwrap()
}

/// Mean and standard deviation of `y − x` in 8-bit levels.
fn residual_stats(y: &Planes, x: &Planes) -> (f64, f64) {
    let d: Vec<f64> = y.data.iter().zip(&x.data).map(|(a, b)| 255.0 * f64::from(a - b)).collect();
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    (mean, (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt())
}

fn mean_std(data: &[f32]) -> (f64, f64) {
    let n = data.len() as f64;
    let mean = data.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    (mean, (data.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt())
}

#[test]
fn fixed_awgn_has_the_named_standard_deviation_and_is_quantised() {
    let x = constant(0.5, 128, 128);
    let d = Degradation::fixed(Task::Denoise, None).unwrap();
    assert_eq!(d, Degradation::Denoise { sigma: 25.0 / 255.0, peak: None });
    let y = d.apply(&x, &mut rng_for(1, "a.png"));
    let (mean, std) = residual_stats(&y, &x);
    // 8-bit rounding adds 1/12 level² of variance: √(25² + 1/12) = 25.002.
    assert!(mean.abs() < 0.3 && (std - 25.0).abs() < 0.4, "mean {mean}, std {std}");
    assert!(y.data.iter().all(|v| ((v * 255.0) - (v * 255.0).round()).abs() < 1e-4 && (0.0..=1.0).contains(v)));
}

#[test]
fn blind_noise_levels_cover_zero_to_fifty() {
    let mut rng = rng_for(3, "draws");
    let sigmas: Vec<f64> = (0..300)
        .map(|_| match Degradation::draw(Task::Denoise, false, &mut rng) {
            Degradation::Denoise { sigma, peak: None } => sigma * 255.0,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(sigmas.iter().all(|s| (0.0..=50.0).contains(s)));
    assert!(sigmas.iter().cloned().fold(f64::MAX, f64::min) < 3.0);
    assert!(sigmas.iter().cloned().fold(0.0, f64::max) > 47.0);
    let with_poisson = (0..200).filter(|_| {
        matches!(Degradation::draw(Task::Denoise, true, &mut rng), Degradation::Denoise { peak: Some(_), .. })
    });
    let n = with_poisson.count();
    assert!((60..140).contains(&n), "{n} of 200 Poisson–Gaussian");
}

#[test]
fn poisson_gaussian_variance_is_signal_over_peak_plus_sigma_squared() {
    let x = constant(0.5, 128, 128);
    let d = Degradation::Denoise { sigma: 4.0 / 255.0, peak: Some(100.0) };
    let y = d.apply(&x, &mut rng_for(5, "pg"));
    let (_, std) = residual_stats(&y, &x);
    let expect = 255.0 * (0.5 / 100.0 + (4.0f64 / 255.0).powi(2)).sqrt();
    assert!((std / expect - 1.0).abs() < 0.04, "std {std} vs {expect}");
}

#[test]
fn blur_kernels_sum_to_one() {
    for s in [0.5, 1.0, 2.0, 3.0] {
        let k = Kernel::gaussian(s);
        assert_eq!(k.size, 2 * (3.0 * s).ceil() as usize + 1);
        assert!((k.weights.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let mut rng = rng_for(7, "motion");
    for _ in 0..50 {
        let k = Kernel::motion(&mut rng);
        assert!(k.size % 2 == 1 && k.size >= 5 && k.size <= 45, "size {}", k.size);
        assert!(k.weights.iter().all(|&w| w >= 0.0));
        assert!((k.weights.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let mut gaussians = 0;
    for _ in 0..100 {
        match Degradation::draw(Task::Deblur, false, &mut rng) {
            Degradation::Deblur { blur: Blur::Gaussian { sigma: b }, sigma } => {
                gaussians += 1;
                assert!((0.5..=3.0).contains(&b) && (0.0..=3.0 / 255.0).contains(&sigma));
            }
            Degradation::Deblur { blur: Blur::Motion { .. }, sigma } => assert!(sigma <= 3.0 / 255.0),
            other => panic!("{other:?}"),
        }
    }
    assert!((25..75).contains(&gaussians));
}

#[test]
fn separable_gaussian_equals_the_2d_convolution_and_keeps_constants() {
    let mut x = constant(0.0, 23, 31);
    for (i, v) in x.data.iter_mut().enumerate() {
        *v = ((i * 7919) % 97) as f32 / 96.0;
    }
    let a = convolve_separable(&x, &gaussian_1d(1.3));
    let b = convolve(&x, &Kernel::gaussian(1.3));
    assert!(a.data.iter().zip(&b.data).all(|(p, q)| (p - q).abs() < 1e-5));
    let c = constant(0.3, 16, 16);
    let k = Kernel::motion(&mut rng_for(0, "k"));
    assert!(convolve(&c, &k).data.iter().all(|v| (v - 0.3).abs() < 1e-5));
}

#[test]
fn fixed_deblur_adds_two_levels_of_noise_after_a_two_pixel_blur() {
    let d = Degradation::fixed(Task::Deblur, None).unwrap();
    assert_eq!(d, Degradation::Deblur { blur: Blur::Gaussian { sigma: 2.0 }, sigma: 2.0 / 255.0 });
    let x = constant(0.5, 96, 96);
    let (_, std) = residual_stats(&d.apply(&x, &mut rng_for(2, "b")), &x);
    assert!((std - 2.02).abs() < 0.1, "std {std}");
    // A vertical edge spreads over about ±3σ.
    let mut edge = constant(0.0, 8, 40);
    edge.data.iter_mut().enumerate().for_each(|(i, v)| *v = if i % 40 >= 20 { 1.0 } else { 0.0 });
    let blurred = convolve_separable(&edge, &gaussian_1d(2.0));
    assert!((blurred.at(0, 4, 20) - 0.6).abs() < 0.05 && blurred.at(0, 4, 12) < 0.01);
}

#[test]
fn lowlight_darkens_by_the_exposure_curve_with_shot_noise() {
    let d = Degradation::fixed(Task::Lowlight, None).unwrap();
    let x = constant(0.8, 128, 128);
    let y = d.apply(&x, &mut rng_for(4, "l"));
    let (mean, std) = mean_std(&y.data);
    let m = 0.1 * 0.8f64.powf(1.8);
    let expect_std = (m / 400.0 + (1.0f64 / 255.0).powi(2)).sqrt();
    assert!((mean - m).abs() < 0.002, "mean {mean} vs {m}");
    assert!((std / expect_std - 1.0).abs() < 0.06, "std {std} vs {expect_std}");
    let mut rng = rng_for(9, "lows");
    for _ in 0..100 {
        let Degradation::Lowlight { exposure, gamma, peak, sigma } = Degradation::draw(Task::Lowlight, false, &mut rng)
        else {
            panic!()
        };
        assert!((0.05..=0.3).contains(&exposure) && (1.3..=2.2).contains(&gamma));
        assert!((100.0..=1000.0).contains(&peak) && (0.5 / 255.0..=3.0 / 255.0).contains(&sigma));
    }
}

#[test]
fn same_seed_same_output_different_seeds_differ() {
    let mut x = constant(0.0, 24, 24);
    x.data.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 24) as f32 / 23.0);
    for task in Task::ALL {
        let run = |seed: u64, key: &str| {
            let mut rng = rng_for(seed, key);
            let d = Degradation::draw(task, true, &mut rng);
            (d.clone(), d.apply(&x, &mut rng))
        };
        assert_eq!(run(11, "a.png"), run(11, "a.png"), "{task:?}");
        assert_ne!(run(11, "a.png").1, run(12, "a.png").1, "{task:?}");
        assert_ne!(run(11, "a.png").1, run(11, "b.png").1, "{task:?}");
    }
}

#[test]
fn fixed_parameters_are_checked_and_tasks_parse() {
    assert!(Degradation::fixed(Task::Denoise, Some(300.0)).is_err());
    assert!(Degradation::fixed(Task::Denoise, Some(f64::NAN)).is_err());
    assert!(Degradation::fixed(Task::Deblur, Some(0.0)).is_err());
    assert!(Degradation::fixed(Task::Lowlight, Some(1.0)).unwrap_err().to_string().contains("lowlight"));
    assert_eq!("deblur".parse::<Task>().unwrap(), Task::Deblur);
    assert!("sharpen".parse::<Task>().unwrap_err().to_string().contains("denoise, deblur, lowlight"));
    let json = serde_json::to_value(Degradation::fixed(Task::Deblur, None).unwrap()).unwrap();
    assert_eq!(json["task"], "deblur");
    assert_eq!(json["blur"]["kind"], "gaussian");
}

#[test]
fn the_inverse_curve_undoes_the_exposure_curve_and_clamps() {
    let x = Planes::new(1, 1, 5, vec![0.0, 0.1, 0.37, 0.8, 1.0]).unwrap();
    let c = Curve::new(0.1, 1.8).unwrap();
    let mut y = x.clone();
    y.data.iter_mut().for_each(|v| *v = (0.1 * f64::from(*v).powf(1.8)) as f32);
    let back = c.invert(&y);
    for (a, b) in back.data.iter().zip(&x.data) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    // Brighter than the curve's full scale (noise) clamps to white; negative values to black.
    let over = c.invert(&Planes::new(1, 1, 2, vec![0.5, -0.1]).unwrap());
    assert_eq!(over.data, vec![1.0, 0.0]);
    let known = |t| Degradation::fixed(t, None).unwrap().known();
    assert_eq!(known(Task::Lowlight), Some(crate::known::Known::Curve(Curve { exposure: 0.1, gamma: 1.8 })));
    assert_eq!(known(Task::Deblur), Some(crate::known::Known::Blur(Kernel::gaussian(2.0))));
    assert_eq!(known(Task::Denoise), None);
}

#[test]
fn curves_outside_their_ranges_are_refused_by_flag() {
    for (e, g, flag) in
        [(0.0, 1.8, "--exposure"), (1.5, 1.8, "--exposure"), (f64::NAN, 1.8, "--exposure"), (0.1, 9.0, "--gamma")]
    {
        let err = Curve::new(e, g).unwrap_err().to_string();
        assert!(err.contains(flag), "{e} {g}: {err}");
    }
}
