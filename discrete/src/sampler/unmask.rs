//! Which masked positions a predictor step reveals: at random, as the reverse process does, or the most confident
//! first (MaskGIT's and LLaDA's low-confidence remasking), for masked `ancestral` and `consistency`.

use super::*;

/// Which masked positions a predictor step of the masked process reveals.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Unmasking {
    /// Each masked position independently with probability (α_s − α_t)/(1 − α_t): the exact reverse process.
    #[default]
    Random,
    /// As many positions as `Random` reveals on average, by stochastic rounding (all at the last step), drawn
    /// without replacement with weights `(max_v p(v | x_t))^{1/τ}`: confident positions first, τ → 0 in order of
    /// confidence. The fixed count means that with at least as many steps as positions it reveals one position
    /// at a time, which is exact with an exact denoiser whatever the order (an adaptive order of exact
    /// conditionals), where `Random` sometimes reveals several at once. When a step must reveal many positions
    /// the confident ones make fewer joint errors; the choice leans towards likely sequences (opt-in,
    /// docs/discrete.md).
    Confident {
        /// Selection temperature τ > 0.
        tau: f64,
    },
}

impl Unmasking {
    /// Checks τ and that the sampler reveals masked positions.
    pub(super) fn validate(&self, kind: SamplerKind, process: ProcessKind) -> Result<()> {
        let Unmasking::Confident { tau } = *self else { return Ok(()) };
        if !(tau > 0.0 && tau.is_finite()) {
            return Err(Error::invalid("unmasking tau", format!("{tau} must be > 0")));
        }
        if process != ProcessKind::Masked || !matches!(kind, SamplerKind::Ancestral | SamplerKind::Consistency) {
            return Err(Error::not_applicable(
                "confident unmasking",
                format!("it orders the reveals of masked ancestral and consistency sampling, not {kind} on {process}"),
            ));
        }
        Ok(())
    }
}

impl FromStr for Unmasking {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid("unmasking", format!("'{s}': expected random, confident or confident:TAU"));
        match s.split_once(':') {
            None if s == "random" => Ok(Unmasking::Random),
            None if s == "confident" => Ok(Unmasking::Confident { tau: DEFAULT_TAU }),
            Some(("confident", tau)) => Ok(Unmasking::Confident { tau: tau.parse().map_err(|_| bad())? }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Unmasking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmasking::Random => write!(f, "random"),
            Unmasking::Confident { tau } => write!(f, "confident:{tau}"),
        }
    }
}

/// τ of `confident` without a value.
pub const DEFAULT_TAU: f64 = 0.1;

/// One sequence's confident predictor step: the masked positions, their clean posteriors `[m·W]`, log selection
/// weights `[m]` and the law of the number revealed, as (probability, count).
pub(super) struct Reveal {
    masked: Vec<usize>,
    laws: Vec<f64>,
    logw: Vec<f64>,
    counts: [(f64, usize); 2],
}

impl Engine<'_> {
    pub(super) fn reveal(&self, rows: &[f64], x: &[i64], t: f64, s: f64, last: bool, tau: f64) -> Reveal {
        let w = self.width;
        let (a_t, a_s) = (self.alpha(t), self.alpha(s));
        let share = if last || a_t >= 1.0 { 1.0 } else { ((a_s - a_t) / (1.0 - a_t)).clamp(0.0, 1.0) };
        let (mut masked, mut laws, mut logw) = (Vec::new(), Vec::new(), Vec::new());
        let mut buf = vec![0.0; w];
        for (i, &xi) in x.iter().enumerate() {
            let xi = xi as usize;
            if self.known(xi, None) {
                continue;
            }
            let pos = Position { row: &rows[i * w..(i + 1) * w], x_t: xi, known: false };
            self.clean(pos, a_t, &mut buf);
            if last && self.cfg.greedy_final {
                let best = argmax(&buf);
                buf.iter_mut().enumerate().for_each(|(v, p)| *p = f64::from(v == best));
            }
            masked.push(i);
            logw.push(buf.iter().cloned().fold(0.0, f64::max).max(1e-300).ln() / tau);
            laws.extend_from_slice(&buf);
        }
        let expected = share * masked.len() as f64;
        let lo = (expected.floor() as usize).min(masked.len());
        let p_hi = if lo < masked.len() { expected - lo as f64 } else { 0.0 };
        Reveal { masked, laws, logw, counts: [(1.0 - p_hi, lo), (p_hi, lo + 1)] }
    }
}

impl Reveal {
    /// The exact law of the step as a mixture over the revealed sets (small problems only).
    pub(super) fn law(&self, x: &[i64], w: usize) -> SeqLaw {
        let mut comps = Vec::new();
        for &(pk, k) in self.counts.iter().filter(|c| c.0 > 0.0) {
            for (ps, set) in subsets_plackett_luce(&self.logw, k) {
                let changed = set.into_iter().map(|j| (self.masked[j], &self.laws[j * w..(j + 1) * w]));
                comps.push((pk * ps, keep_but(x, w, changed)));
            }
        }
        SeqLaw::Mixture(comps)
    }

    /// Draws the step into `out` (which holds x_t).
    pub(super) fn draw<R: RngCore>(&self, w: usize, out: &mut [i64], rng: &mut R, precision: Precision) {
        let [(_, lo), (p_hi, hi)] = self.counts;
        let k = if p_hi > 0.0 && categorical::sample(&[1.0 - p_hi, p_hi], rng, Precision::F64) == 1 { hi } else { lo };
        for j in run::draw_positions(&self.logw, k, rng) {
            out[self.masked[j]] = categorical::sample(&self.laws[j * w..(j + 1) * w], rng, precision) as i64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        assert_eq!("random".parse::<Unmasking>().unwrap(), Unmasking::Random);
        assert_eq!("confident".parse::<Unmasking>().unwrap(), Unmasking::Confident { tau: DEFAULT_TAU });
        let c: Unmasking = "confident:0.5".parse().unwrap();
        assert_eq!(c, Unmasking::Confident { tau: 0.5 });
        assert_eq!(c.to_string().parse::<Unmasking>().unwrap(), c);
        for bad in ["", "confident:", "confident:x", "sure", "random:1"] {
            assert!(bad.parse::<Unmasking>().is_err(), "{bad}");
        }
    }
}
