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

/// The weights and sidecar of a task's built-in known-parameter model (`None` for denoise: noise has no
/// parameters a user knows and the blind model lacks).
fn known_files(task: Task) -> Option<(&'static [u8], &'static str)> {
    match task {
        Task::Denoise => None,
        Task::Deblur => {
            Some((include_bytes!("../models/deblur-known.safetensors"), include_str!("../models/deblur-known.json")))
        }
        Task::Lowlight => Some((
            include_bytes!("../models/lowlight-known.safetensors"),
            include_str!("../models/lowlight-known.json"),
        )),
    }
}

/// Loads the built-in known-parameter model of `task` (restoring through a known curve or kernel,
/// [`crate::known`]) onto `device`.
pub fn load_known(task: Task, device: Device) -> Result<RestorationModel> {
    let name = format!("builtin:{}-known", task.name());
    let (weights, sidecar) = known_files(task)
        .ok_or_else(|| Error::invalid("known parameters", format!("{} has no known-parameter model", task.name())))?;
    let config: ModelConfig =
        serde_json::from_str(sidecar).map_err(|e| Error::model(Path::new(&name), format!("bad sidecar: {e}")))?;
    config.validate()?;
    RestorationModel::from_bytes(weights, config, Path::new(&name), device)
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
            assert!(m.config().input.is_degraded(), "{task:?}: the default model is blind");
        }
        for task in [Task::Deblur, Task::Lowlight] {
            let (weights, _) = known_files(task).unwrap();
            assert!(weights.len() <= 25 * 1024 * 1024, "{task:?}: {} bytes", weights.len());
            let m = load_known(task, Device::Cpu).unwrap();
            assert_eq!(m.config().task, task.name());
            assert!(!m.config().input.is_degraded(), "{task:?}: the known-parameter model is blind");
            for key in ["command", "seconds", "machine"] {
                assert!(m.config().training.get(key).is_some(), "{task:?}: the sidecar's training lacks '{key}'");
            }
            assert!(m.config().sampler.steps <= 10, "{task:?}: the default sampler takes over 10 NFE");
        }
        assert!(load_known(Task::Denoise, Device::Cpu).is_err());
    }
}
