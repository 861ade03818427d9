//! A path's coefficients at a batch of times, as tensors: for networks and losses that draw one t per item.
//! Computed in f64 from the path's own closed forms (no second copy of any formula), then cast to `t`'s kind.

use tch::{Device, Kind, Tensor};

use super::NoisePath;
use crate::Result;

/// α, γ and σ of a path at times `t`, each shaped like `t`, in its kind and on its device.
#[derive(Debug)]
pub struct BatchPoint {
    /// Signal coefficient α(t).
    pub alpha: Tensor,
    /// Anchor coefficient γ(t).
    pub gamma: Tensor,
    /// Noise standard deviation σ(t).
    pub sigma: Tensor,
}

impl BatchPoint {
    /// `path`'s coefficients at every element of `t` (any shape; t is read, never differentiated).
    ///
    /// ```
    /// use diffuse_core::path::{BatchPoint, NoisePath, Ouve};
    /// let path = Ouve::new(1.5, 0.05, 0.5, 0.03, 1.0)?;
    /// let p = BatchPoint::at(&path, &tch::Tensor::from_slice(&[0.5f32, 1.0]))?;
    /// assert!((p.sigma.double_value(&[1]) - path.sigma(1.0)).abs() < 1e-7);
    /// # Ok::<(), diffuse_core::Error>(())
    /// ```
    pub fn at(path: &dyn NoisePath, t: &Tensor) -> Result<Self> {
        let times =
            Vec::<f64>::try_from(t.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_flatten(0, -1)?)?;
        let points: Vec<_> = times.iter().map(|&s| path.point(s)).collect();
        let column = |f: fn(&super::Point) -> f64| -> Result<Tensor> {
            let values: Vec<f64> = points.iter().map(f).collect();
            Ok(Tensor::f_from_slice(&values)?
                .f_view(t.size().as_slice())?
                .f_to_kind(t.kind())?
                .f_to_device(t.device())?)
        };
        Ok(BatchPoint { alpha: column(|p| p.alpha)?, gamma: column(|p| p.gamma)?, sigma: column(|p| p.sigma)? })
    }
}
