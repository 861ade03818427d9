//! Restores a noisy photo with the built-in denoiser from a program that links only diffuse-restoration (and
//! diffuse-core): the whole-image pipeline (tiling, the model's default sampler, format and bit depth kept).
//!
//!     cargo run --release -p diffuse-restoration --example denoise -- examples/restore/noisy/motorcycle.png out.png

use std::path::PathBuf;

use diffuse_restoration::degrade::Task;
use diffuse_restoration::pipeline::{DEFAULT_TILING, restore_file};
use diffuse_restoration::sample::SampleOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [input, output] = args.as_slice() else {
        return Err("usage: denoise INPUT.png OUTPUT.png".into());
    };
    let model = diffuse_restoration::default_models::load(Task::Denoise, tch::Device::cuda_if_available())?;
    let opts = SampleOptions::defaults_of(&model);
    let report = restore_file(&model, input, output, &opts, DEFAULT_TILING, false, None)?;
    println!("restored {:.2} megapixels into {}", report.megapixels, output.display());
    Ok(())
}
