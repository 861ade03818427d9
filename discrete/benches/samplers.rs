//! Sampler overhead per step against one model call, and tokens per second for every sampler, at a
//! 1 000-token vocabulary and 256-token sequences (docs/benchmarks.md, section "discrete").
//!
//! `cargo bench -p diffuse-discrete --bench samplers` (env `BENCH_BATCH`, `BENCH_STEPS`, `BENCH_DEVICE=cuda`).
//! The model is a small stand-in (embedding 64 → ReLU → linear to the vocabulary, ~130 MFLOP per call at
//! batch 4); an LM-sized call is timed as well, for the ratio a real model would see. The overhead is what the
//! sampler adds to each step: the softmax (or exponential) of the rows in f64 by libtorch and their copy, the
//! conversions, bridges and f64 categorical draws over all 1 000 tokens of every position. Times are the
//! fastest of 5 runs (7 for model calls).

use std::time::Instant;

use diffuse_core::SampleSeeds;
use diffuse_discrete::categorical::Precision;
use diffuse_discrete::sampler::{self, SamplerConfig, SamplerKind};
use diffuse_discrete::schedule::LogLinear;
use diffuse_discrete::{Denoiser, Output, Process, Schedule};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Embedding → `layers` hidden ReLU layers of width d → logits. For score outputs the logits are read as a
/// clean posterior and turned into the consistent log concrete score, so score samplers see realistic scores.
struct Toy {
    process: Process,
    output: Output,
    emb: nn::Embedding,
    hidden: Vec<nn::Linear>,
    out: nn::Linear,
    schedule: LogLinear,
    _vs: nn::VarStore,
}

impl Toy {
    fn new(process: Process, output: Output, d: i64, layers: usize, device: Device) -> Self {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(device);
        let w = process.width() as i64;
        let emb = nn::embedding(vs.root() / "emb", w, d, Default::default());
        let hidden = (0..layers).map(|i| nn::linear(vs.root() / format!("h{i}"), d, d, Default::default())).collect();
        let out = nn::linear(vs.root() / "out", d, w, Default::default());
        Toy { process, output, emb, hidden, out, schedule: LogLinear::default(), _vs: vs }
    }
}

impl Denoiser for Toy {
    fn process(&self) -> Process {
        self.process
    }
    fn output(&self) -> Output {
        self.output
    }
    fn time_independent(&self) -> bool {
        self.output != Output::LogScore
    }
    fn forward(&self, x_t: &Tensor, t: f64, _noise: Option<&Tensor>) -> diffuse_discrete::Result<Tensor> {
        Ok(tch::no_grad(|| {
            let mut h = self.emb.forward(x_t).relu();
            for l in &self.hidden {
                h = l.forward(&h).relu();
            }
            let logits = self.out.forward(&h);
            if self.output != Output::LogScore {
                return logits;
            }
            let a = self.schedule.alpha(t);
            let k = self.process.vocab() as i64;
            match self.process {
                Process::Masked { .. } => {
                    // ln s_v = ln(α/(1 − α)) + ln p(v) at masked positions; ln s_mask = 0.
                    let lp = logits.narrow(-1, 0, k).log_softmax(-1, Kind::Float) + (a / (1.0 - a)).ln();
                    Tensor::cat(&[lp, logits.narrow(-1, k, 1).zeros_like()], -1)
                }
                Process::Uniform { .. } => {
                    // m = απ + (1 − α)/K, s = m/m[x_t].
                    let m = logits.softmax(-1, Kind::Float) * a + (1.0 - a) / k as f64;
                    let m_x = m.gather(-1, &x_t.unsqueeze(-1), false);
                    (m / m_x).log()
                }
            }
        }))
    }
}

/// Fastest of several runs: the development machine is shared, and the minimum is least disturbed by others.
fn fastest(v: Vec<f64>) -> f64 {
    v.into_iter().fold(f64::INFINITY, f64::min)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let (k, len) = (1000usize, 256usize);
    let batch = env("BENCH_BATCH", 4);
    let steps = env("BENCH_STEPS", 16);
    let device = if std::env::var("BENCH_DEVICE").as_deref() == Ok("cuda") { Device::Cuda(0) } else { Device::Cpu };
    let schedule = LogLinear::default();
    println!(
        "vocab {k}, length {len}, batch {batch}, steps {steps}, device {device:?}, torch threads {}",
        tch::get_num_threads()
    );

    // One model call on a batch of noisy tokens: the tiny stand-in, and an LM-sized one (width 768, 6 hidden
    // layers, ≈ 10 GFLOP per call at batch 4, the order of a small transformer's).
    // Clean tokens only: valid input for both processes' stand-ins.
    let x = Tensor::randint(k as i64, [batch as i64, len as i64], (Kind::Int64, device));
    let time_call = |den: &Toy| -> f64 {
        let _ = den.forward(&x, 0.5, None).unwrap();
        fastest(
            (0..7)
                .map(|_| {
                    let t0 = Instant::now();
                    let y = den.forward(&x, 0.5, None).unwrap();
                    // Synchronise (CUDA) by reading one value back.
                    let _ = Vec::<f32>::try_from(y.flatten(0, -1).narrow(0, 0, 1)).unwrap();
                    t0.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let call = time_call(&Toy::new(Process::Masked { vocab: k }, Output::Clean, 64, 0, device));
    let lm_call = time_call(&Toy::new(Process::Masked { vocab: k }, Output::Clean, 768, 6, device));
    println!("model call: stand-in {:.2} ms, LM-sized {:.1} ms", call * 1e3, lm_call * 1e3);
    println!("| sampler | process | output | ms/step | overhead/step | ÷ stand-in call | ÷ LM-sized call | tokens/s |");
    println!("|---|---|---|---|---|---|---|---|");

    let cases: Vec<(SamplerKind, Process, Output, bool, Precision)> = vec![
        (SamplerKind::Ancestral, Process::Masked { vocab: k }, Output::Clean, false, Precision::F64),
        (SamplerKind::Ancestral, Process::Masked { vocab: k }, Output::Clean, false, Precision::F32),
        (SamplerKind::Ancestral, Process::Masked { vocab: k }, Output::Clean, true, Precision::F64),
        (SamplerKind::Remdm, Process::Masked { vocab: k }, Output::Clean, false, Precision::F64),
        (SamplerKind::Consistency, Process::Masked { vocab: k }, Output::Clean, false, Precision::F64),
        (SamplerKind::TauLeaping, Process::Masked { vocab: k }, Output::LogScore, false, Precision::F64),
        (SamplerKind::Tweedie, Process::Masked { vocab: k }, Output::LogScore, false, Precision::F64),
        (SamplerKind::Ancestral, Process::Uniform { vocab: k }, Output::LeaveOneOut, false, Precision::F64),
        (SamplerKind::Ancestral, Process::Uniform { vocab: k }, Output::Clean, false, Precision::F64),
        (SamplerKind::PredictorCorrector, Process::Uniform { vocab: k }, Output::LeaveOneOut, false, Precision::F64),
        (SamplerKind::TauLeaping, Process::Uniform { vocab: k }, Output::LogScore, false, Precision::F64),
        (SamplerKind::Tweedie, Process::Uniform { vocab: k }, Output::LogScore, false, Precision::F64),
        (SamplerKind::Audm, Process::Uniform { vocab: k }, Output::AudmClean, false, Precision::F64),
        (SamplerKind::Consistency, Process::Uniform { vocab: k }, Output::Clean, false, Precision::F64),
    ];
    for (kind, process, output, cache, precision) in cases {
        let den = Toy::new(process, output, 64, 0, device);
        let mut cfg = SamplerConfig::new(kind, steps);
        cfg.cache = cache;
        cfg.precision = precision;
        let seeds = SampleSeeds::new(0, 0, batch);
        let mut calls = 0;
        let times: Vec<f64> = (0..5)
            .map(|_| {
                let t0 = Instant::now();
                let out = sampler::sample(&den, &schedule, &cfg, len, &seeds, device).unwrap();
                calls = out.model_calls;
                t0.elapsed().as_secs_f64()
            })
            .collect();
        let total = fastest(times);
        let per_step = total / steps as f64;
        // This stand-in's own call: the score stand-ins compute their scores from logits inside the call.
        let own_call = time_call(&den);
        let overhead = (total - calls as f64 * own_call) / steps as f64;
        let name = format!(
            "{kind}{}{}",
            if cache { " (cache)" } else { "" },
            if precision == Precision::F32 { " (f32 race)" } else { "" }
        );
        println!(
            "| {name} | {} | {output} | {:.1} | {:.1} ms | {:.1} | {:.3} | {:.0} |",
            process.kind(),
            per_step * 1e3,
            overhead * 1e3,
            overhead / own_call,
            overhead / lm_call,
            (batch * len) as f64 / total
        );
    }
}
