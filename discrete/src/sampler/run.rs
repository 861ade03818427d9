//! Drawing sequences: the prior, the sub-step loop with the cache, fixed template positions.

use super::*;

/// Draws k positions without replacement with weights e^{logw} (exponential race: the k smallest E_i/w_i).
pub(super) fn draw_positions<R: RngCore>(logw: &[f64], k: usize, rng: &mut R) -> Vec<usize> {
    let m = logw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut keys: Vec<(f64, usize)> =
        logw.iter().enumerate().map(|(i, v)| (exp_noise_f64(rng) / (v - m).exp(), i)).collect();
    keys.sort_by(|a, b| a.0.total_cmp(&b.0));
    keys.into_iter().take(k).map(|(_, i)| i).collect()
}

fn draw_sequence<R: RngCore>(law: &[f64], width: usize, out: &mut [i64], rng: &mut R, precision: Precision) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = categorical::sample(&law[i * width..(i + 1) * width], rng, precision) as i64;
    }
}

fn prior_tokens(
    process: Process,
    kind: SamplerKind,
    len: usize,
    rng: &mut dyn RngCore,
) -> (Vec<i64>, Option<Vec<i64>>) {
    match process {
        Process::Masked { vocab } => (vec![vocab as i64; len], None),
        Process::Uniform { vocab } => {
            let uniform = vec![1.0; vocab];
            let x: Vec<i64> = (0..len).map(|_| categorical::sample(&uniform, rng, Precision::F64) as i64).collect();
            let u = (kind == SamplerKind::Audm).then(|| x.clone());
            (x, u)
        }
    }
}

/// Draws one sequence per seed in `seeds` with sampler `cfg`, running the denoiser on `device`.
pub fn sample(
    den: &dyn Denoiser,
    schedule: &dyn Schedule,
    cfg: &SamplerConfig,
    len: usize,
    seeds: &SampleSeeds,
    device: Device,
) -> Result<Sampled> {
    sample_with(den, schedule, cfg, len, seeds, device, &mut |_, _| {})
}

/// [`sample`] with an observer called after each sub-step with (sub-step index, number of sub-steps).
pub fn sample_with(
    den: &dyn Denoiser,
    schedule: &dyn Schedule,
    cfg: &SamplerConfig,
    len: usize,
    seeds: &SampleSeeds,
    device: Device,
    observer: &mut dyn FnMut(usize, usize),
) -> Result<Sampled> {
    run(den, schedule, cfg, len, None, seeds, device, observer)
}

/// [`sample_with`] with some positions fixed (infilling): `template[i] = Some(token)` holds position i at that
/// clean token from the start and after every sub-step, `None` is generated. For the masked process this is
/// exact conditioning on the fixed tokens (the sampler never changes an unmasked token).
pub fn sample_template(
    den: &dyn Denoiser,
    schedule: &dyn Schedule,
    cfg: &SamplerConfig,
    template: &[Option<i64>],
    seeds: &SampleSeeds,
    device: Device,
    observer: &mut dyn FnMut(usize, usize),
) -> Result<Sampled> {
    let k = den.process().vocab() as i64;
    if let Some(bad) = template.iter().flatten().find(|&&x| !(0..k).contains(&x)) {
        return Err(Error::invalid("template", format!("token {bad} is outside the vocabulary of {k}")));
    }
    run(den, schedule, cfg, template.len(), Some(template), seeds, device, observer)
}

fn fix(tokens: &mut [i64], template: Option<&[Option<i64>]>) {
    if let Some(t) = template {
        for row in tokens.chunks_mut(t.len()) {
            for (x, f) in row.iter_mut().zip(t) {
                if let Some(v) = f {
                    *x = *v;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    den: &dyn Denoiser,
    schedule: &dyn Schedule,
    cfg: &SamplerConfig,
    len: usize,
    template: Option<&[Option<i64>]>,
    seeds: &SampleSeeds,
    device: Device,
    observer: &mut dyn FnMut(usize, usize),
) -> Result<Sampled> {
    let eng = Engine::new(den, schedule, cfg, len)?;
    let (n, l, w) = (seeds.len(), len, eng.width);
    let mut tokens = Vec::with_capacity(n * l);
    let mut noise: Option<Vec<i64>> = (cfg.kind == SamplerKind::Audm).then(Vec::new);
    for b in 0..n {
        let (x, u) = prior_tokens(eng.process, cfg.kind, l, &mut seeds.rng(b, 0));
        tokens.extend(x);
        if let (Some(all), Some(u)) = (noise.as_mut(), u) {
            all.extend(u);
        }
    }
    fix(&mut tokens, template);
    let subs = substeps(cfg);
    let (mut calls, mut evals) = (0, 0);
    // Cache: the model rows of each sequence and the tokens they were computed for.
    let mut rows = vec![0.0; n * l * w];
    let mut rows_for: Vec<Option<Vec<i64>>> = vec![None; n];
    for (k, &sub) in subs.iter().enumerate() {
        let t_eval = Engine::sub_time(sub);
        let stale: Vec<usize> =
            (0..n).filter(|&b| !(cfg.cache && rows_for[b].as_deref() == Some(&tokens[b * l..(b + 1) * l]))).collect();
        if !stale.is_empty() {
            // Sequences that hold the same tokens (every one at a masked prior, or under one template) are
            // evaluated once: `unique` lists one sequence per distinct row, `slot` maps each stale one to it.
            let row_of = |b: usize| (&tokens[b * l..(b + 1) * l], noise.as_ref().map(|u| &u[b * l..(b + 1) * l]));
            let mut unique: Vec<usize> = Vec::new();
            let mut seen = HashMap::new();
            let slot: Vec<usize> = stale
                .iter()
                .map(|&b| {
                    *seen.entry(row_of(b)).or_insert_with(|| {
                        unique.push(b);
                        unique.len() - 1
                    })
                })
                .collect();
            drop(seen);
            let sub_tokens: Vec<i64> = unique.iter().flat_map(|&b| row_of(b).0.iter().copied()).collect();
            let sub_noise: Option<Vec<i64>> =
                noise.as_ref().map(|u| unique.iter().flat_map(|&b| u[b * l..(b + 1) * l].iter().copied()).collect());
            if unique.len() == n {
                eng.rows_into(den, &sub_tokens, sub_noise.as_deref(), t_eval, device, &mut rows)?;
            } else {
                let mut r = vec![0.0; sub_tokens.len() * w];
                eng.rows_into(den, &sub_tokens, sub_noise.as_deref(), t_eval, device, &mut r)?;
                for (&b, &j) in stale.iter().zip(&slot) {
                    rows[b * l * w..(b + 1) * l * w].copy_from_slice(&r[j * l * w..(j + 1) * l * w]);
                }
            }
            for &b in &stale {
                rows_for[b] = Some(tokens[b * l..(b + 1) * l].to_vec());
            }
            calls += 1;
            evals += unique.len();
        }
        for (b, out) in tokens.chunks_mut(l).enumerate() {
            step_sequence(&eng, cfg, sub, k, b, &rows[b * l * w..(b + 1) * l * w], noise.as_deref(), seeds, out);
        }
        fix(&mut tokens, template);
        observer(k + 1, subs.len());
    }
    Ok(Sampled { tokens, len, model_calls: calls, evaluations: evals })
}

/// One sub-step of sequence `b` (its model rows `r`), drawn from its own stream: `out` holds its tokens.
#[allow(clippy::too_many_arguments)]
fn step_sequence(
    eng: &Engine<'_>,
    cfg: &SamplerConfig,
    sub: Sub,
    k: usize,
    b: usize,
    r: &[f64],
    noise: Option<&[i64]>,
    seeds: &SampleSeeds,
    out: &mut [i64],
) {
    let (l, w) = (eng.len, eng.width);
    let mut rng = seeds.rng(b, k as u64 + 1);
    let x = out.to_vec();
    let u = noise.map(|u| &u[b * l..(b + 1) * l]);
    match (sub, cfg.unmasking) {
        (Sub::Predict { t, s, last }, Unmasking::Confident { tau }) => {
            eng.reveal(r, &x, t, s, last, tau).draw(w, out, &mut rng, cfg.precision);
        }
        (Sub::Predict { t, s, last }, _) if cfg.kind == SamplerKind::Consistency && !(last && cfg.greedy_final) => {
            // Two stages, as CDLM samples: a whole x̂0 from the model, then x_s from the hard bridge.
            let (a_t, a_s) = (eng.alpha(t), eng.alpha(s));
            let mut p = vec![0.0; w];
            let mut bridge = vec![0.0; w];
            for i in 0..l {
                let xi = x[i] as usize;
                let pos = Position { row: &r[i * w..(i + 1) * w], x_t: xi, known: eng.known(xi, None) };
                eng.clean(pos, a_t, &mut p);
                let x0 = categorical::sample(&p, &mut rng, cfg.precision);
                eng.process.bridge_hard(xi, x0, a_s, a_t, &mut bridge);
                out[i] = categorical::sample(&bridge, &mut rng, cfg.precision) as i64;
            }
        }
        (Sub::Predict { t, s, last }, _) => {
            let law = eng.predict_law(r, &x, u, t, s, last);
            draw_sequence(&law, w, out, &mut rng, cfg.precision);
        }
        (Sub::Correct { s }, _) => {
            for (i, cond) in eng.correct(r, &x, s, &mut rng) {
                out[i] = categorical::sample(&cond, &mut rng, cfg.precision) as i64;
            }
        }
    }
}
