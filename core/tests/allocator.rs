//! The driver settles glibc's allocator thresholds, so that repeated runs on step-sized tensors reuse the heap
//! instead of trimming it and faulting its pages in again at every step (docs/benchmarks.md, "Per-step solver
//! overhead"). Counted in minor page faults, which unlike time do not depend on the machine's load; its own test
//! binary, so that no other test's allocations are counted.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn repeated_runs_do_not_fault_their_tensors_in_again() {
    use diffuse_core::Parameterization;
    use diffuse_core::denoiser::{Conditioning, FnDenoiser};
    use diffuse_core::path::Edm;
    use diffuse_core::solvers::{Budget, NoNoise, SolverOptions, build_solver, sample};
    use diffuse_core::spacing::{End, GridSpec, Spacing};
    use tch::{Device, Kind, Tensor};

    fn minor_faults() -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        // Field 10 (minflt), counted after the parenthesised command name.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split_whitespace().nth(7).unwrap().parse().unwrap()
    }

    tch::set_num_threads(1);
    // 2 MB of f32, the size at which glibc's default thresholds made every step fault its pages in again.
    let x = Tensor::randn([4, 2, 256, 256], (Kind::Float, Device::Cpu));
    let path = Edm::default();
    let model = FnDenoiser::new(Parameterization::Data, |x: &Tensor, _t, _c: &Conditioning| Ok(x.shallow_clone()));
    let grid = GridSpec::new(Spacing::Karras { rho: 7.0 }, End::Time(0.01));
    let solver = build_solver("dpm-solver-2", &SolverOptions::default()).unwrap();
    let run = || {
        sample(
            solver.as_ref(),
            &path,
            &model,
            &Conditioning::none(),
            &x,
            &grid,
            Budget::Steps(20),
            &mut NoNoise,
            &mut (),
        )
        .unwrap()
    };
    run();
    let before = minor_faults();
    for _ in 0..5 {
        run();
    }
    let faults = minor_faults() - before;
    // 100 steps of ~6 tensors of 512 pages each: tens of thousands of faults when the heap is trimmed every step.
    let pages_per_tensor = 2 * 256 * 256 * 4 * 4 / 4096;
    assert!(faults < 4 * pages_per_tensor as u64, "{faults} minor page faults in 5 repeated runs");
}
