//! The shipped default models, one per task, compiled into the library (feature `default-models`, on by
//! default) so that `diffuse restore denoise photo.png` works without a download. Each was trained by
//! `diffuse restore train` on the offline images of tools/prepare_restoration_data.py; its sidecar
//! (restoration/models/TASK.json) holds the exact command, the time it took and the machine. The weights are
//! stored in float16 (tools/half_weights.py) and widened to float32 on load.

use std::path::Path;

use tch::Device;

use crate::degrade::Task;
use crate::model::{ModelConfig, RestorationModel};
use crate::{Error, Result};

/// The weights (safetensors, float16) and the sidecar of a task's model.
fn files(task: Task) -> (&'static [u8], &'static str) {
    match task {
        Task::Denoise => (include_bytes!("../models/denoise.safetensors"), include_str!("../models/denoise.json")),
        Task::Deblur => (include_bytes!("../models/deblur.safetensors"), include_str!("../models/deblur.json")),
        Task::Lowlight => (include_bytes!("../models/lowlight.safetensors"), include_str!("../models/lowlight.json")),
    }
}

/// How a task's built-in model is named in messages: `builtin:denoise`, ….
pub fn name(task: Task) -> String {
    format!("builtin:{}", task.name())
}

/// The built-in model's sidecar for `task`.
pub fn config(task: Task) -> Result<ModelConfig> {
    let (_, sidecar) = files(task);
    let name = name(task);
    let config: ModelConfig =
        serde_json::from_str(sidecar).map_err(|e| Error::model(Path::new(&name), format!("bad sidecar: {e}")))?;
    config.validate()?;
    Ok(config)
}

/// Loads the built-in model of `task` onto `device`.
///
/// ```
/// use diffuse_restoration::{default_models, degrade::Task};
/// let model = default_models::load(Task::Denoise, tch::Device::Cpu)?;
/// assert_eq!(model.config().task, "denoise");
/// # Ok::<(), diffuse_restoration::Error>(())
/// ```
pub fn load(task: Task, device: Device) -> Result<RestorationModel> {
    let (weights, _) = files(task);
    RestorationModel::from_bytes(weights, config(task)?, Path::new(&name(task)), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_model_loads_is_small_and_has_its_recipe() {
        for task in Task::ALL {
            let (weights, _) = files(task);
            assert!(weights.len() <= 25 * 1024 * 1024, "{task:?}: {} bytes", weights.len());
            let m = load(task, Device::Cpu).unwrap();
            assert_eq!(m.config().task, task.name());
            let training = &m.config().training;
            for key in ["command", "seconds", "machine"] {
                assert!(training.get(key).is_some(), "{task:?}: the sidecar's training lacks '{key}'");
            }
            assert!(m.config().sampler.steps <= 10, "{task:?}: the default sampler takes over 10 NFE");
        }
    }
}
