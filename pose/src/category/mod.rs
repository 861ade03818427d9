//! Category-level pose and size: objects never scanned before, known only by their category.
//!
//! An estimate is a rigid pose canonical → scene and the size `[w, h, d]` of the object's tight box in its
//! canonical frame. Canonical frames follow the NOCS convention (Wang et al. 2019): +y up (bottom → top), the
//! origin at the centre of the tight box, and for the mug the handle towards +x; bottle, bowl and can are
//! symmetric about y. For the box, +x is its longer horizontal side; for the laptop, +x runs along the hinge and
//! the lid stands at −z, opening towards +z.
//!
//! - [`shapes`]: procedural instances per category with wide shape variation, seeded;
//! - [`scene`]: single-view scans of an instance standing on a supporting plane, from the virtual depth camera;
//! - [`metrics`]: the NOCS / REAL275 measures (3D IoU, rotation and translation errors, symmetry-aware);
//! - [`baseline`]: the PCA oriented bounding box with its up-axis from the supporting plane;
//! - [`chart`]: the diffusion state, a posed and sized box in the chart of a base box;
//! - [`net`], [`model`]: the learned denoiser (a PointNet over the scan seen from the noisy box) and its sidecar;
//! - [`estimate`]: the reverse diffusion of several hypotheses by core's solver, scored by agreement;
//! - [`train`]: training by denoising on procedural scans;
//! - [`bench`]: the benchmark behind `diffuse pose bench --category`.

pub mod baseline;
pub mod bench;
pub mod chart;
pub mod default_model;
pub mod estimate;
pub mod metrics;
pub mod model;
pub mod net;
pub mod scene;
pub mod shapes;
pub mod train;

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// An object category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Bottles: a body, a shoulder and a neck; symmetric about y.
    Bottle,
    /// Bowls: an open shell; symmetric about y.
    Bowl,
    /// Cans: closed cylinders; symmetric about y.
    Can,
    /// Mugs: an open cup with a handle towards +x.
    Mug,
    /// Boxes: closed cuboids; a half-turn about y leaves them unchanged.
    Box,
    /// Laptops: a base and an opened lid.
    Laptop,
}

/// Every category, in report order.
pub const CATEGORIES: [Category; 6] =
    [Category::Bottle, Category::Bowl, Category::Can, Category::Mug, Category::Box, Category::Laptop];

/// How a category's canonical frame may turn without changing the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CategorySymmetry {
    /// Any turn about y.
    AboutY,
    /// A half-turn about y.
    HalfTurnY,
    /// None.
    None,
}

impl Category {
    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Category::Bottle => "bottle",
            Category::Bowl => "bowl",
            Category::Can => "can",
            Category::Mug => "mug",
            Category::Box => "box",
            Category::Laptop => "laptop",
        }
    }

    /// The turns of the canonical frame that leave the category's objects unchanged (the mug's only while its
    /// handle is hidden, which the metrics decide per scan, as NOCS does).
    pub fn symmetry(&self) -> CategorySymmetry {
        match self {
            Category::Bottle | Category::Bowl | Category::Can => CategorySymmetry::AboutY,
            Category::Box => CategorySymmetry::HalfTurnY,
            Category::Mug | Category::Laptop => CategorySymmetry::None,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Category {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        CATEGORIES.iter().copied().find(|c| c.name() == s.trim()).ok_or_else(|| {
            let known: Vec<&str> = CATEGORIES.iter().map(|c| c.name()).collect();
            Error::invalid("category", format!("unknown category '{s}'; known: {}", known.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_parse_by_name_and_list_the_known_ones() {
        for c in CATEGORIES {
            assert_eq!(c.name().parse::<Category>().unwrap(), c);
        }
        let e = "teapot".parse::<Category>().unwrap_err().to_string();
        assert!(e.contains("'teapot'") && e.contains("bottle, bowl, can, mug, box, laptop"), "{e}");
    }
}
