//! Identities proven by enumeration on small known targets: parameterization conversions against marginal
//! ratios, ELBOs equal to the exact negative log-likelihood, the exact denoiser as the fixed point of the CDLM
//! consistency objective, and the entropy lost by 32-bit exponential-race sampling.

use std::sync::Arc;

use diffuse_discrete::categorical::{entropy, exp_noise_f32};
use diffuse_discrete::exact::{ExactDenoiser, Target};
use diffuse_discrete::loss::{UniformElbo, consistency_loss, mdlm_elbo, score_entropy, uniform_elbo};
use diffuse_discrete::param::{Converter, Position, Rows};
use diffuse_discrete::schedule::{Cosine, LogLinear, Schedule};
use diffuse_discrete::{Denoiser, Output, Process};
use tch::{Kind, Tensor};

fn all_sequences(width: usize, len: usize) -> Vec<Vec<usize>> {
    let n = width.pow(len as u32);
    (0..n)
        .map(|mut i| {
            let mut s = vec![0; len];
            for x in s.iter_mut().rev() {
                *x = i % width;
                i /= width;
            }
            s
        })
        .collect()
}

fn tokens(seqs: &[Vec<usize>]) -> Tensor {
    let flat: Vec<i64> = seqs.iter().flatten().map(|&x| x as i64).collect();
    Tensor::from_slice(&flat).view([seqs.len() as i64, seqs[0].len() as i64])
}

fn rows(den: &dyn Denoiser, seqs: &[Vec<usize>], t: f64) -> Vec<f64> {
    Vec::try_from(den.forward(&tokens(seqs), t, None).unwrap().flatten(0, -1)).unwrap()
}

/// The concrete score computed from each parameterization equals the ratio of exact marginals
/// p_t(x with x^i = v)/p_t(x), and the clean posteriors obtained from every parameterization agree.
#[test]
fn every_parameterization_converts_to_the_exact_marginal_ratios() {
    let target = Arc::new(Target::random(4, 3, 0.3, 2).unwrap());
    for process in [Process::Uniform { vocab: 4 }, Process::Masked { vocab: 4 }] {
        let w = process.width();
        let states = all_sequences(w, 3);
        for t in [0.3, 0.8] {
            let sched: Arc<dyn Schedule> = Arc::new(LogLinear::default());
            let alpha = sched.alpha(t);
            let outputs: &[Output] = match process {
                Process::Uniform { .. } => &[Output::Clean, Output::LeaveOneOut, Output::LogScore],
                Process::Masked { .. } => &[Output::Clean, Output::LogScore],
            };
            // Each output read raw and in the form the samplers prepare with libtorch.
            let per_output: Vec<(Converter, Vec<f64>)> = outputs
                .iter()
                .flat_map(|&o| {
                    let den = ExactDenoiser::new(target.clone(), process, o, sched.clone()).unwrap();
                    let raw = den.forward(&tokens(&states), t, None).unwrap().to_kind(Kind::Double);
                    let kind = Rows::prepared(o);
                    let prepared = kind.prepare(&raw, process.vocab(), 1.0).unwrap();
                    let conv = |rows| Converter { process, output: o, temperature: 1.0, rows };
                    [
                        (conv(Rows::Raw), rows(&den, &states, t)),
                        (conv(kind), Vec::try_from(prepared.flatten(0, -1)).unwrap()),
                    ]
                })
                .collect();
            let mut checked = 0;
            for (n, x) in states.iter().enumerate() {
                let p_x = target.marginal(&process, x, alpha).unwrap();
                if p_x < 1e-12 {
                    continue;
                }
                for i in 0..3 {
                    let known = process.mask().is_some_and(|m| x[i] != m);
                    let mut first_clean: Option<Vec<f64>> = None;
                    for (conv, r) in &per_output {
                        let pos = Position { row: &r[(n * 3 + i) * w..(n * 3 + i + 1) * w], x_t: x[i], known };
                        let (mut clean, mut score) = (vec![0.0; w], vec![0.0; w]);
                        conv.clean(pos, alpha, &mut clean);
                        if let Some(c) = &first_clean {
                            for v in 0..w {
                                assert!(
                                    (c[v] - clean[v]).abs() < 1e-9,
                                    "{process:?} {:?}: clean {clean:?} vs {c:?}",
                                    conv.output
                                );
                            }
                        } else {
                            first_clean = Some(clean);
                        }
                        if known {
                            continue;
                        }
                        conv.score(pos, alpha, &mut score);
                        for v in 0..process.vocab() {
                            let mut y = x.clone();
                            y[i] = v;
                            let ratio = target.marginal(&process, &y, alpha).unwrap() / p_x;
                            assert!(
                                (score[v] - ratio).abs() < 1e-9 * (1.0 + ratio),
                                "{process:?} {:?} t {t} x {x:?} i {i} v {v}: {} vs {ratio}",
                                conv.output,
                                score[v]
                            );
                        }
                        checked += 1;
                    }
                }
            }
            assert!(checked > 50);
        }
    }
}

/// Gauss–Legendre nodes and weights on [0, 1].
fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    (1..=n)
        .map(|i| {
            let mut x = (std::f64::consts::PI * (i as f64 - 0.25) / (n as f64 + 0.5)).cos();
            let mut dp = 0.0;
            for _ in 0..100 {
                let (mut p0, mut p1) = (1.0, x);
                for k in 2..=n {
                    let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                    p0 = p1;
                    p1 = p2;
                }
                dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
                let dx = p1 / dp;
                x -= dx;
                if dx.abs() < 1e-16 {
                    break;
                }
            }
            ((1.0 - x) / 2.0, 1.0 / ((1.0 - x * x) * dp * dp))
        })
        .collect()
}

/// ∫_0^1 E_{x_t ~ q(·|x0)}[Σ_i loss_i] dt for one clean sequence, the loss computed by `loss` on a batch of all x_t.
fn integrate(
    process: Process,
    sched: &dyn Schedule,
    x0: &[usize],
    nodes: usize,
    loss: &dyn Fn(&Tensor, &Tensor, f64) -> Tensor,
) -> f64 {
    let states = all_sequences(process.width(), x0.len());
    let xt = tokens(&states);
    let x0t = tokens(&vec![x0.to_vec(); states.len()]);
    let mut total = 0.0;
    // t = τ³(10 − 15τ + 6τ²) flattens the integrable endpoint singularities of the uniform ELBOs (α → 0 and
    // α → 1); polynomial integrands stay polynomial.
    for (tau, w_tau) in gauss_legendre(nodes) {
        let t = tau.powi(3) * (10.0 - 15.0 * tau + 6.0 * tau * tau);
        let wt = w_tau * 30.0 * tau * tau * (1.0 - tau) * (1.0 - tau);
        let a = sched.alpha(t);
        let q: Vec<f64> =
            states.iter().map(|s| s.iter().zip(x0).map(|(&y, &c)| process.likelihood(y, c, a)).product()).collect();
        let per_token = loss(&x0t, &xt, t);
        let per_seq: Vec<f64> = Vec::try_from(per_token.sum_dim_intlist(-1, false, Kind::Double)).unwrap();
        let e: f64 = q.iter().zip(&per_seq).filter(|(q, _)| **q > 0.0).map(|(q, l)| q * l).sum();
        total += wt * e;
    }
    total
}

fn time_tensors(sched: &dyn Schedule, t: f64, b: i64) -> (Tensor, Tensor) {
    (
        Tensor::full([b, 1], sched.alpha(t), (Kind::Double, tch::Device::Cpu)),
        Tensor::full([b, 1], sched.alpha_prime(t), (Kind::Double, tch::Device::Cpu)),
    )
}

/// With α(0) = 1, α(1) = 0 and the exact denoiser, every continuous-time ELBO equals −ln p(x0).
#[test]
fn elbos_equal_the_exact_negative_log_likelihood() {
    let target = Arc::new(
        Target::markov(3, 3, &[0.5, 0.3, 0.2], &[vec![0.6, 0.3, 0.1], vec![0.2, 0.2, 0.6], vec![0.3, 0.4, 0.3]])
            .unwrap(),
    );
    let schedules: Vec<Arc<dyn Schedule>> = vec![Arc::new(LogLinear { eps: 0.0 }), Arc::new(Cosine { eps: 0.0 })];
    for sched in &schedules {
        let masked = Process::Masked { vocab: 3 };
        let uniform = Process::Uniform { vocab: 3 };
        let den = |p, o| ExactDenoiser::new(target.clone(), p, o, sched.clone()).unwrap();
        let (m_clean, m_score) = (den(masked, Output::Clean), den(masked, Output::LogScore));
        let (u_clean, u_loo, u_score) =
            (den(uniform, Output::Clean), den(uniform, Output::LeaveOneOut), den(uniform, Output::LogScore));
        let s = sched.as_ref();
        let mut plug_in_clean_excess = 0.0;
        for x0 in [[0, 0, 0], [1, 2, 1], [2, 1, 0], [0, 1, 2]] {
            let nll = -target.prob(&x0).ln();
            let check = |name: &str, value: f64, tol: f64| {
                assert!((value - nll).abs() < tol, "{} {name} for {x0:?}: {value} vs −ln p = {nll}", s.describe());
            };
            let b = |xt: &Tensor| xt.size()[0];
            check(
                "MDLM ELBO",
                integrate(masked, s, &x0, 48, &|x0t, xt, t| {
                    let (a, ap) = time_tensors(s, t, b(xt));
                    mdlm_elbo(&m_clean.forward(xt, t, None).unwrap(), x0t, xt, &a, &ap, masked).unwrap()
                }),
                1e-8,
            );
            check(
                "masked score entropy",
                integrate(masked, s, &x0, 48, &|x0t, xt, t| {
                    let (a, ap) = time_tensors(s, t, b(xt));
                    score_entropy(&m_score.forward(xt, t, None).unwrap(), x0t, xt, &a, &ap, masked).unwrap()
                }),
                1e-8,
            );
            check(
                "uniform ELBO, plug-in of the LOO denoiser",
                integrate(uniform, s, &x0, 32, &|x0t, xt, t| {
                    let (a, ap) = time_tensors(s, t, b(xt));
                    uniform_elbo(&u_loo.forward(xt, t, None).unwrap(), x0t, xt, &a, &ap, uniform, UniformElbo::PlugIn)
                        .unwrap()
                }),
                1e-4,
            );
            check(
                "uniform ELBO, leave-one-out form of the clean denoiser",
                integrate(uniform, s, &x0, 32, &|x0t, xt, t| {
                    let (a, ap) = time_tensors(s, t, b(xt));
                    uniform_elbo(
                        &u_clean.forward(xt, t, None).unwrap(),
                        x0t,
                        xt,
                        &a,
                        &ap,
                        uniform,
                        UniformElbo::LeaveOneOut,
                    )
                    .unwrap()
                }),
                1e-4,
            );
            check(
                "uniform score entropy",
                integrate(uniform, s, &x0, 32, &|x0t, xt, t| {
                    let (a, ap) = time_tensors(s, t, b(xt));
                    score_entropy(&u_score.forward(xt, t, None).unwrap(), x0t, xt, &a, &ap, uniform).unwrap()
                }),
                1e-4,
            );
            // Plugging the clean posterior in directly is the wrong quantity: the bound is loose.
            let wrong = integrate(uniform, s, &x0, 32, &|x0t, xt, t| {
                let (a, ap) = time_tensors(s, t, b(xt));
                uniform_elbo(&u_clean.forward(xt, t, None).unwrap(), x0t, xt, &a, &ap, uniform, UniformElbo::PlugIn)
                    .unwrap()
            });
            plug_in_clean_excess += target.prob(&x0) * (wrong - nll);
        }
        assert!(
            plug_in_clean_excess > 1e-3,
            "plugging the clean posterior should loosen the bound: {plug_in_clean_excess}"
        );
    }
}

/// Along the exact bridge, E[p(x0^i | x_s) | x_t] = p(x0^i | x_t): the exact denoiser is the fixed point of the
/// CDLM objective, and perturbing it raises the objective.
#[test]
fn exact_denoiser_is_the_consistency_fixed_point() {
    let target = Arc::new(Target::random(3, 3, 0.2, 8).unwrap());
    let sched: Arc<dyn Schedule> = Arc::new(LogLinear::default());
    for process in [Process::Masked { vocab: 3 }, Process::Uniform { vocab: 3 }] {
        let w = process.width();
        let den = ExactDenoiser::new(target.clone(), process, Output::Clean, sched.clone()).unwrap();
        let (t, s) = (0.8, 0.35);
        let (a_t, a_s) = (sched.alpha(t), sched.alpha(s));
        let x_t = match process {
            Process::Masked { .. } => vec![3, 1, 3],
            Process::Uniform { .. } => vec![2, 0, 1],
        };
        // Joint posterior over clean sequences, then the exact reverse law of x_s.
        let cleans = all_sequences(3, 3);
        let post: Vec<f64> = cleans
            .iter()
            .map(|c| target.prob(c) * c.iter().zip(&x_t).map(|(&v, &y)| process.likelihood(y, v, a_t)).product::<f64>())
            .collect();
        let z: f64 = post.iter().sum();
        let states = all_sequences(w, 3);
        let mut bridge = vec![0.0; w];
        let law: Vec<f64> = states
            .iter()
            .map(|xs| {
                cleans
                    .iter()
                    .zip(&post)
                    .map(|(c, p)| {
                        p / z
                            * (0..3)
                                .map(|i| {
                                    process.bridge_hard(x_t[i], c[i], a_s, a_t, &mut bridge);
                                    bridge[xs[i]]
                                })
                                .product::<f64>()
                    })
                    .sum()
            })
            .collect();
        assert!((law.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let at_t = target.posterior(&process, &x_t, a_t).unwrap();
        let mut mean = vec![vec![0.0; 3]; 3];
        for (xs, &p) in states.iter().zip(&law) {
            if p > 0.0 {
                let m = target.posterior(&process, xs, a_s).unwrap();
                for i in 0..3 {
                    for v in 0..3 {
                        mean[i][v] += p * m[i][v];
                    }
                }
            }
        }
        for i in 0..3 {
            for v in 0..3 {
                assert!(
                    (mean[i][v] - at_t[i][v]).abs() < 1e-12,
                    "{process:?} i {i} v {v}: {} vs {}",
                    mean[i][v],
                    at_t[i][v]
                );
            }
        }
        // Expected CDLM loss of the exact model and of perturbed ones.
        let targets = den.forward(&tokens(&states), s, None).unwrap();
        let weights = Tensor::from_slice(&law);
        let expected = |logits_t: &Tensor| -> f64 {
            let l = consistency_loss(&logits_t.expand([states.len() as i64, 3, w as i64], false), &targets).unwrap();
            // Rows of x_s with zero probability may hold −∞ targets; weight 0 removes them.
            let per_seq = l.sum_dim_intlist(-1, false, Kind::Double).nan_to_num(0.0, 0.0, 0.0);
            f64::try_from((per_seq * &weights).sum(Kind::Double)).unwrap()
        };
        let exact = den.forward(&tokens(std::slice::from_ref(&x_t)), t, None).unwrap();
        let best = expected(&exact);
        let entropy_sum: f64 = at_t.iter().map(|m| entropy(m)).sum();
        assert!((best - entropy_sum).abs() < 1e-9, "{best} vs {entropy_sum}");
        for seed in 0..3 {
            tch::manual_seed(seed);
            let noisy = &exact + Tensor::randn([1, 3, w as i64], (Kind::Double, tch::Device::Cpu)) * 0.3;
            assert!(expected(&noisy) > best + 1e-4, "{process:?}: perturbed model is not worse");
        }
    }
}

/// The 32-bit exponential race loses entropy on a long-tailed step of a many-step masked sampler, an exact f64
/// draw (the library's inverse CDF, or an f64 race) does not. The categorical is [mask: 1 − δ, token v: δ·p_v] with p Zipf over 1000 tokens and δ = 1e-3 (a
/// 1000-step sampler mid-way). Conditional on unmasking, the tokens barely compete with each other (δ is small),
/// so P(v wins) = E_{E_mask}[P(E_v ≤ r_v·E_mask)], r_v = δp_v/(1 − δ), with the exact law of each noise: the f32
/// one by enumerating the library's 2²⁴ noise values near 0, the f64 one 1 − e^{−x} (53-bit granularity 1e-16).
#[test]
fn f32_race_loses_entropy_on_a_long_tail() {
    let k = 1000;
    let zipf: Vec<f64> = (1..=k).map(|v| 1.0 / v as f64).collect();
    let z: f64 = zipf.iter().sum();
    let p: Vec<f64> = zipf.iter().map(|v| v / z).collect();
    let delta = 1e-3;
    // Smallest f32 noise values, ascending: bits 2²⁴ − 1, 2²⁴ − 2, …
    let small: Vec<f64> = (1..=1u32 << 20).map(|j| exp_noise_f32((1 << 24) - j) as f64).collect();
    assert!(small.windows(2).all(|w| w[0] <= w[1]));
    // E_{E_mask}[F(r·E_mask)] with E_mask ~ Exp(1), exactly: F32 is a step function with jumps 2⁻²⁴ at the
    // noise values, so the expectation is 2⁻²⁴·Σ_j P(E_mask ≥ e_j / r) = 2⁻²⁴·Σ_j e^{−e_j/r}; for the f64 noise
    // (F = 1 − e^{−x}) it is r/(1 + r).
    let win32 = |r: f64| -> f64 {
        let mut s = 0.0;
        for &e in &small {
            let term = (-e / r).exp();
            if term < 1e-18 {
                return s / (1u64 << 24) as f64;
            }
            s += term;
        }
        panic!("noise table too short for r = {r}");
    };
    let win64 = |r: f64| r / (1.0 + r);
    let law = |win: &dyn Fn(f64) -> f64| -> Vec<f64> {
        let mut q: Vec<f64> = p.iter().map(|&pv| win(delta * pv / (1.0 - delta))).collect();
        let s: f64 = q.iter().sum();
        q.iter_mut().for_each(|v| *v /= s);
        q
    };
    let (h_true, h64, h32) = (entropy(&p), entropy(&law(&win64)), entropy(&law(&win32)));
    let q32 = law(&win32);
    let tail32: f64 = q32[100..].iter().sum();
    let tail: f64 = p[100..].iter().sum();
    eprintln!(
        "entropy: exact {h_true:.4}, f64 race {h64:.4}, f32 race {h32:.4} nats; tail mass beyond 100: {tail:.4} vs f32 {tail32:.4}"
    );
    // Neglecting competition between tokens is accurate to O(δ·max p) ≈ 1e-4 in the entropy.
    assert!((h64 - h_true).abs() < 1e-3, "{h64} vs {h_true}");
    assert!(h32 < h_true - 0.05, "f32 race kept the entropy: {h32} vs {h_true}");
    assert!(tail32 < 0.95 * tail, "{tail32} vs {tail}");
}
