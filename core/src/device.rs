//! Device selection (`--device auto|cpu|cuda[:N]`), thread count and a report of what libtorch can use.

use std::fmt;
use std::str::FromStr;

use tch::{Cuda, Device};

use crate::{Error, Result};

/// Which device the user asked for; [`DeviceSpec::resolve`] turns it into a `tch::Device` or a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA device 0 when CUDA is available, otherwise the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N (`cuda` alone means N = 0).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceSpec::Cuda).map_err(|_| {
                    Error::invalid("device", format!("'{s}': the CUDA index must be a number, as in cuda:0"))
                }),
                None => Err(Error::invalid("device", format!("'{s}': expected auto, cpu, cuda or cuda:N"))),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => write!(f, "auto"),
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The device to run on; asking for CUDA where there is none is an error, never a silent CPU fallback.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto => Ok(if Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
            DeviceSpec::Cuda(n) => {
                let count = cuda_device_count();
                if count == 0 {
                    Err(Error::Device(format!(
                        "no CUDA device was found (asked for cuda:{n}); this libtorch sees {} — check the NVIDIA \
                         driver (nvidia-smi) and that libtorch is a CUDA build, or use --device cpu",
                        if Cuda::is_available() { "CUDA but no device" } else { "no CUDA" }
                    )))
                } else if n >= count {
                    Err(Error::Device(format!(
                        "CUDA device {n} does not exist; this machine has {count} (cuda:0 … cuda:{})",
                        count - 1
                    )))
                } else {
                    Ok(Device::Cuda(n))
                }
            }
        }
    }
}

/// Number of CUDA devices libtorch can use (0 without CUDA).
pub fn cuda_device_count() -> usize {
    if Cuda::is_available() { usize::try_from(Cuda::device_count()).unwrap_or(0) } else { 0 }
}

/// Human-readable name of a device ("cpu", "cuda:0").
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Sets the number of intra-op threads libtorch uses (0 keeps libtorch's default).
pub fn set_threads(n: usize) {
    if n > 0 {
        tch::set_num_threads(i32::try_from(n).unwrap_or(i32::MAX));
    }
}

/// What libtorch reports about the machine, for `diffuse doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeReport {
    /// libtorch version read next to the loaded library, when it can be found.
    pub libtorch_version: Option<String>,
    /// Folder of the libtorch shared libraries this process loaded.
    pub libtorch_path: Option<String>,
    /// Whether libtorch can use CUDA.
    pub cuda_available: bool,
    /// Whether cuDNN is available.
    pub cudnn_available: bool,
    /// Number of CUDA devices.
    pub cuda_devices: usize,
    /// libtorch intra-op thread count.
    pub threads: i32,
}

impl RuntimeReport {
    /// Collects the report from the running process.
    pub fn collect() -> Self {
        let libtorch_path = loaded_libtorch_dir();
        let libtorch_version = libtorch_path.as_deref().and_then(read_libtorch_version);
        RuntimeReport {
            libtorch_version,
            libtorch_path,
            cuda_available: Cuda::is_available(),
            cudnn_available: Cuda::cudnn_is_available(),
            cuda_devices: cuda_device_count(),
            threads: tch::get_num_threads(),
        }
    }
}

/// Folder holding the libtorch_cpu shared library mapped into this process (Linux: /proc/self/maps).
fn loaded_libtorch_dir() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| std::path::Path::new(p).parent().map(|d| d.display().to_string()))
}

/// Version of a libtorch folder: `../version.py` in a Python wheel, `../build-version` in a libtorch archive.
fn read_libtorch_version(lib_dir: &str) -> Option<String> {
    let root = std::path::Path::new(lib_dir).parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        let line = text.lines().find(|l| l.starts_with("__version__"))?;
        return Some(line.split('\'').nth(1)?.to_string());
    }
    std::fs::read_to_string(root.join("build-version")).ok().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_specs() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("CPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn cuda_without_a_device_is_an_error() {
        if cuda_device_count() == 0 {
            let err = DeviceSpec::Cuda(0).resolve().unwrap_err().to_string();
            assert!(err.contains("no CUDA device"), "{err}");
            assert_eq!(DeviceSpec::Auto.resolve().unwrap(), Device::Cpu);
        }
    }

    #[test]
    fn finds_the_loaded_libtorch() {
        let report = RuntimeReport::collect();
        assert!(report.libtorch_path.is_some(), "{report:?}");
        assert!(report.libtorch_version.as_deref().is_some_and(|v| v.starts_with("2.11.0")), "{report:?}");
    }
}
