//! Samples two sequences from the built-in text model and prints them, from a program that links only
//! diffuse-discrete (and diffuse-core).
//!
//!     cargo run --release -p diffuse-discrete --example sample

use diffuse_core::SampleSeeds;
use diffuse_discrete::sampler::SamplerConfig;
use diffuse_discrete::text::generate::{generate, prefix_suffix};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = tch::Device::cuda_if_available();
    let model = diffuse_discrete::default_model::load(device)?;
    let defaults = &model.config().sampler;
    let cfg = SamplerConfig::new(defaults.sampler.parse()?, defaults.steps);
    let template = prefix_suffix("The ", 60, "");
    let texts = generate(&model, &cfg, &template, &SampleSeeds::new(0, 0, 2), device, &mut |_, _| {})?;
    for t in texts {
        println!("{}\n", String::from_utf8_lossy(&t));
    }
    Ok(())
}
