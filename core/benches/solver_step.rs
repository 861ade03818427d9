//! Per-step overhead of each solver on a 4×2×256×256 f32 tensor with a zero-cost model (the model returns its
//! input as x̂0), next to one element-wise tensor op of the same size. `scripts/bench-ratios.py` turns the
//! criterion results into the ratio table of docs/benchmarks.md.

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use diffuse_core::Parameterization;
use diffuse_core::denoiser::{Conditioning, FnDenoiser};
use diffuse_core::path::Edm;
use diffuse_core::solvers::{Budget, NoNoise, SolverOptions, build_solver, sample};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use tch::{Device, Kind, Tensor};

const STEPS: usize = 20;
const SOLVERS: &[&str] = &[
    "ddim",
    "euler",
    "heun",
    "dpm++2m",
    "dpm++3m",
    "unipc-bh2",
    "unipc-bh2-3",
    "deis-3",
    "dpm-solver-2",
    "dpm-solver-3",
];

fn bench(c: &mut Criterion) {
    tch::set_num_threads(1);
    let x = Tensor::randn([4, 2, 256, 256], (Kind::Float, Device::Cpu));
    let y = Tensor::randn([4, 2, 256, 256], (Kind::Float, Device::Cpu));
    let mut group = c.benchmark_group("solver_step");
    group.sample_size(20);
    group.bench_function("elementwise_op", |b| b.iter(|| x.f_mul_scalar(0.5).unwrap()));
    group.bench_function("axpy", |b| b.iter(|| x.f_mul_scalar(0.5).unwrap().f_add_(&y).unwrap()));
    let path = Edm::default();
    let model = FnDenoiser::new(Parameterization::Data, |x: &Tensor, _t, _c: &Conditioning| Ok(x.shallow_clone()));
    let grid = GridSpec::new(Spacing::Karras { rho: 7.0 }, End::Time(0.01));
    for name in SOLVERS {
        let solver = build_solver(name, &SolverOptions::default()).unwrap();
        // Time per step = time of a STEPS-step run / STEPS.
        group.bench_with_input(BenchmarkId::new("per_step", name), name, |b, _| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    sample(
                        solver.as_ref(),
                        &path,
                        &model,
                        &Conditioning::none(),
                        &x,
                        &grid,
                        Budget::Steps(STEPS),
                        &mut NoNoise,
                        &mut (),
                    )
                    .unwrap();
                }
                start.elapsed() / STEPS as u32
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench
}
criterion_main!(benches);
