//! The exact output law of a sampler on small problems, by propagating the law of its state.

use super::*;

/// The exact output distribution of sampler `cfg` with denoiser `den`, by propagating the law of the sampler's
/// state (tokens, and AUDM's noise tokens) through every sub-step. Fails with [`Error::TooLarge`] when more than
/// `max_states` states carry mass.
pub fn exact_law(
    den: &dyn Denoiser,
    schedule: &dyn Schedule,
    cfg: &SamplerConfig,
    len: usize,
    max_states: usize,
) -> Result<HashMap<Vec<usize>, f64>> {
    let eng = Engine::new(den, schedule, cfg, len)?;
    let (l, w) = (len, eng.width);
    let mut states: HashMap<(Vec<i64>, Vec<i64>), f64> = HashMap::new();
    match eng.process {
        Process::Masked { vocab } => {
            states.insert((vec![vocab as i64; l], Vec::new()), 1.0);
        }
        Process::Uniform { vocab } => {
            let total = (vocab as f64).powi(l as i32);
            if total > max_states as f64 {
                return Err(Error::TooLarge(format!("{vocab}^{l} prior states exceed {max_states}")));
            }
            let mut x = vec![0i64; l];
            for idx in 0..total as usize {
                let mut r = idx;
                for v in x.iter_mut().rev() {
                    *v = (r % vocab) as i64;
                    r /= vocab;
                }
                let u = if cfg.kind == SamplerKind::Audm { x.clone() } else { Vec::new() };
                states.insert((x.clone(), u), 1.0 / total);
            }
        }
    }
    for sub in substeps(cfg) {
        if states.len() > max_states {
            return Err(Error::TooLarge(format!("{} sampler states exceed {max_states}", states.len())));
        }
        let keys: Vec<&(Vec<i64>, Vec<i64>)> = states.keys().collect();
        let n = keys.len();
        let tokens: Vec<i64> = keys.iter().flat_map(|k| k.0.iter().copied()).collect();
        let noise: Option<Vec<i64>> =
            (cfg.kind == SamplerKind::Audm).then(|| keys.iter().flat_map(|k| k.1.iter().copied()).collect());
        let mut rows = vec![0.0; tokens.len() * w];
        eng.rows_into(den, &tokens, noise.as_deref(), Engine::sub_time(sub), Device::Cpu, &mut rows)?;
        let laws = eng.laws(sub, &rows, &tokens, noise.as_deref(), n);
        let mut next: HashMap<(Vec<i64>, Vec<i64>), f64> = HashMap::new();
        for (key, law) in keys.iter().zip(laws) {
            let mass = states[*key];
            let comps = match law {
                SeqLaw::Product(p) => vec![(1.0, p)],
                SeqLaw::Mixture(c) => c,
            };
            for (cw, p) in comps {
                expand(&p, l, w, mass * cw, &key.1, &mut next);
            }
        }
        states = next;
    }
    let mut out: HashMap<Vec<usize>, f64> = HashMap::new();
    for ((x, _), p) in states {
        *out.entry(x.iter().map(|&v| v as usize).collect()).or_default() += p;
    }
    Ok(out)
}

/// Adds `mass` times the product law `p` `[L·W]` to `next`.
fn expand(p: &[f64], l: usize, w: usize, mass: f64, noise: &[i64], next: &mut HashMap<(Vec<i64>, Vec<i64>), f64>) {
    let support: Vec<Vec<(i64, f64)>> = (0..l)
        .map(|i| {
            let row = &p[i * w..(i + 1) * w];
            let z: f64 = row.iter().sum();
            row.iter().enumerate().filter(|(_, v)| **v > 0.0).map(|(v, &q)| (v as i64, q / z)).collect()
        })
        .collect();
    let mut seq = vec![0i64; l];
    fn rec(
        i: usize,
        support: &[Vec<(i64, f64)>],
        seq: &mut Vec<i64>,
        m: f64,
        noise: &[i64],
        next: &mut HashMap<(Vec<i64>, Vec<i64>), f64>,
    ) {
        if i == support.len() {
            *next.entry((seq.clone(), noise.to_vec())).or_default() += m;
            return;
        }
        for &(v, q) in &support[i] {
            seq[i] = v;
            rec(i + 1, support, seq, m * q, noise, next);
        }
    }
    rec(0, &support, &mut seq, mass, noise, next);
}
