//! End to end on a toy denoising task: a tiny network trained for 120 steps (a few seconds) through `train::train` restores
//! held-out noisy images better than the noisy input (PSNR), sampled with RDDM's deterministic sampler through
//! `sample::restore`.

use diffuse_core::Parameterization;
use diffuse_core::path::PathSpec;
use diffuse_core::seed::SampleSeeds;
use diffuse_core::spacing::Spacing;
use diffuse_restoration::model::{ModelConfig, RestorationModel};
use diffuse_restoration::net::NetConfig;
use diffuse_restoration::sample::{SampleOptions, restore};
use diffuse_restoration::train::{Recipe, TrainOptions, train};
use tch::{Device, Kind, Tensor};

/// Smooth images: random 4×4 colour grids upsampled bilinearly to 32×32.
fn smooth(seed: u64, n: usize) -> Tensor {
    let z = SampleSeeds::new(seed, 0, n).normal(0, &[3, 4, 4], Kind::Float, Device::Cpu).sigmoid();
    z.upsample_bilinear2d([32, 32], false, None, None)
}

fn noisy(c: &Tensor, seed: u64) -> Tensor {
    let n = SampleSeeds::new(seed, 0, 1).normal(0, &c.size(), Kind::Float, Device::Cpu).squeeze_dim(0);
    c + n * 0.1
}

fn psnr(a: &Tensor, b: &Tensor) -> f64 {
    let mse = f64::try_from((a - b).square().mean(Kind::Double)).unwrap();
    -10.0 * mse.log10()
}

#[test]
fn a_tiny_model_learns_to_denoise() {
    let train_set: Vec<Tensor> = (0..16).map(|i| smooth(1, 16).get(i)).collect();
    tch::manual_seed(0);
    let cfg = ModelConfig::new(
        "denoise",
        PathSpec::default_of("rddm").unwrap(),
        Parameterization::Residual,
        NetConfig { channels: vec![16, 32], groups: 8, ..NetConfig::tiny(3, 1) },
    );
    let mut model = RestorationModel::new(cfg, Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        recipe: Recipe { batch: 8, crop: 16, lr: 2e-3, ema_decay: 0.9, ..Recipe::default() },
        steps: 120,
        checkpoint_every: 0,
        time_limit: None,
        out: dir.path().to_path_buf(),
        resume: false,
        validate_every: 0,
    };
    let rep = train(&mut model, &train_set, &mut |c, s| noisy(c, s), &opts, &mut |_| {}, None).unwrap();
    let clean = smooth(2, 4);
    let deg = Tensor::stack(&(0..4).map(|i| noisy(&clean.get(i), 100 + i as u64)).collect::<Vec<_>>(), 0);
    let opts = SampleOptions {
        solver: "rddm".into(),
        steps: 2,
        spacing: Spacing::UniformT,
        seed: 0,
        first_index: 0,
        schedule: None,
    };
    let out = restore(&model, &deg.clamp(0.0, 1.0), &opts).unwrap();
    let (before, after) = (psnr(&deg, &clean), psnr(&out, &clean));
    println!("loss {:.4}; PSNR noisy {before:.2} dB, restored {after:.2} dB", rep.last_loss);
    assert!(after > before + 3.0, "noisy {before:.2} dB, restored {after:.2} dB");
}
