//! Sampler overhead per step against one model call, and tokens per second for every sampler, at a
//! 1 000-token vocabulary and 256-token sequences (docs/benchmarks.md, section "discrete").
//!
//! `cargo bench -p diffuse-discrete --bench samplers` (env `BENCH_BATCH`, `BENCH_STEPS`, `BENCH_DEVICE=cuda`).
//! The model is a small stand-in (embedding 64 → ReLU → linear to the vocabulary, ~130 MFLOP per call at batch 4);
//! the overhead is what the sampler adds to each step: moving logits to f64, conversions, bridges and the f64
//! exponential races over all 1 000 tokens of every position.

use std::time::Instant;

use diffuse_core::SampleSeeds;
use diffuse_discrete::categorical::Precision;
use diffuse_discrete::sampler::{self, SamplerConfig, SamplerKind};
use diffuse_discrete::schedule::LogLinear;
use diffuse_discrete::{Denoiser, Output, Process};
use tch::nn::{self, Module};
use tch::{Device, Tensor};

struct Toy {
    process: Process,
    output: Output,
    emb: nn::Embedding,
    out: nn::Linear,
    _vs: nn::VarStore,
}

impl Toy {
    fn new(process: Process, output: Output, device: Device) -> Self {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(device);
        let w = process.width() as i64;
        let emb = nn::embedding(vs.root() / "emb", w, 64, Default::default());
        let out = nn::linear(vs.root() / "out", 64, w, Default::default());
        Toy {
            process,
            output,
            emb,
            out,
            _vs: vs,
        }
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
        true
    }
    fn forward(
        &self,
        x_t: &Tensor,
        _t: f64,
        _noise: Option<&Tensor>,
    ) -> diffuse_discrete::Result<Tensor> {
        Ok(tch::no_grad(|| {
            self.out.forward(&self.emb.forward(x_t).relu())
        }))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (k, len) = (1000usize, 256usize);
    let batch = env("BENCH_BATCH", 4);
    let steps = env("BENCH_STEPS", 16);
    let device = if std::env::var("BENCH_DEVICE").as_deref() == Ok("cuda") {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    let schedule = LogLinear::default();
    println!(
        "vocab {k}, length {len}, batch {batch}, steps {steps}, device {device:?}, torch threads {}",
        tch::get_num_threads()
    );

    // One model call on a batch of noisy tokens.
    let masked = Toy::new(Process::Masked { vocab: k }, Output::Clean, device);
    let x = Tensor::randint(
        k as i64 + 1,
        [batch as i64, len as i64],
        (tch::Kind::Int64, device),
    );
    let _ = masked.forward(&x, 0.5, None).unwrap();
    let call = median(
        (0..7)
            .map(|_| {
                let t0 = Instant::now();
                let y = masked.forward(&x, 0.5, None).unwrap();
                let _ = Vec::<f32>::try_from(y.flatten(0, -1).narrow(0, 0, 1)).unwrap(); // synchronise
                t0.elapsed().as_secs_f64()
            })
            .collect(),
    );
    println!("model call: {:.2} ms", call * 1e3);
    println!(
        "| sampler | process | output | ms/step | overhead/step | overhead ÷ model call | tokens/s |"
    );
    println!("|---|---|---|---|---|---|---|");

    let cases: Vec<(SamplerKind, Process, Output, bool, Precision)> = vec![
        (
            SamplerKind::Ancestral,
            Process::Masked { vocab: k },
            Output::Clean,
            false,
            Precision::F64,
        ),
        (
            SamplerKind::Ancestral,
            Process::Masked { vocab: k },
            Output::Clean,
            false,
            Precision::F32,
        ),
        (
            SamplerKind::Ancestral,
            Process::Masked { vocab: k },
            Output::Clean,
            true,
            Precision::F64,
        ),
        (
            SamplerKind::Remdm,
            Process::Masked { vocab: k },
            Output::Clean,
            false,
            Precision::F64,
        ),
        (
            SamplerKind::Consistency,
            Process::Masked { vocab: k },
            Output::Clean,
            false,
            Precision::F64,
        ),
        (
            SamplerKind::TauLeaping,
            Process::Masked { vocab: k },
            Output::LogScore,
            false,
            Precision::F64,
        ),
        (
            SamplerKind::Tweedie,
            Process::Masked { vocab: k },
            Output::LogScore,
            false,
            Precision::F64,
        ),
        (
            SamplerKind::Ancestral,
            Process::Uniform { vocab: k },
            Output::LeaveOneOut,
            false,
            Precision::F64,
        ),
        (
            SamplerKind::Ancestral,
            Process::Uniform { vocab: k },
            Output::Clean,
            false,
            Precision::F64,
        ),
        (
            SamplerKind::PredictorCorrector,
            Process::Uniform { vocab: k },
            Output::LeaveOneOut,
            false,
            Precision::F64,
        ),
        (
            SamplerKind::TauLeaping,
            Process::Uniform { vocab: k },
            Output::LogScore,
            false,
            Precision::F64,
        ),
        (
            SamplerKind::Tweedie,
            Process::Uniform { vocab: k },
            Output::LogScore,
            false,
            Precision::F64,
        ),
        (
            SamplerKind::Audm,
            Process::Uniform { vocab: k },
            Output::AudmClean,
            false,
            Precision::F64,
        ),
        (
            SamplerKind::Consistency,
            Process::Uniform { vocab: k },
            Output::Clean,
            false,
            Precision::F64,
        ),
    ];
    for (kind, process, output, cache, precision) in cases {
        let den = Toy::new(process, output, device);
        let mut cfg = SamplerConfig::new(kind, steps);
        cfg.cache = cache;
        cfg.precision = precision;
        let seeds = SampleSeeds::new(0, 0, batch);
        let mut calls = 0;
        let times: Vec<f64> = (0..3)
            .map(|_| {
                let t0 = Instant::now();
                let out = sampler::sample(&den, &schedule, &cfg, len, &seeds, device).unwrap();
                calls = out.model_calls;
                t0.elapsed().as_secs_f64()
            })
            .collect();
        let total = median(times);
        let per_step = total / steps as f64;
        let overhead = (total - calls as f64 * call) / steps as f64;
        let name = format!(
            "{kind}{}{}",
            if cache { " (cache)" } else { "" },
            if precision == Precision::F32 {
                " (f32 race)"
            } else {
                ""
            }
        );
        println!(
            "| {name} | {} | {output} | {:.1} | {:.1} ms | {:.2} | {:.0} |",
            process.kind(),
            per_step * 1e3,
            overhead * 1e3,
            overhead / call,
            (batch * len) as f64 / total
        );
    }
}
