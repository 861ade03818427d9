//! `pose bench --plot PREFIX`: accuracy-versus-threshold curves per method (the fraction of estimates within each
//! threshold, as the NOCS paper plots them), one SVG per measure.

use std::path::{Path, PathBuf};

use crate::plot::{Plot, Series};

/// One measure's panel: file suffix, title, x label, and per method its errors.
pub(super) struct Panel {
    /// Appended to the prefix: `PREFIX-<suffix>.svg`.
    pub suffix: &'static str,
    /// What is measured.
    pub title: String,
    /// The threshold's meaning.
    pub x_label: String,
    /// Thresholds from 0 to this.
    pub max: f64,
    /// Count values at or above the threshold (IoU) instead of at or below (errors).
    pub at_least: bool,
    /// `(method, values)`.
    pub methods: Vec<(String, Vec<f64>)>,
}

/// The fraction of `values` within each of 61 thresholds from 0 to `max`.
fn curve(values: &[f64], max: f64, at_least: bool) -> Vec<(f64, f64)> {
    (0..=60)
        .map(|k| {
            let x = max * k as f64 / 60.0;
            let n = values.iter().filter(|&&v| if at_least { v >= x } else { v <= x }).count();
            (x, n as f64 / values.len().max(1) as f64)
        })
        .collect()
}

/// Writes each panel as `PREFIX-<suffix>.svg` (atomically; existing files only with `force`); returns the paths.
pub(super) fn write(prefix: &Path, force: bool, panels: &[Panel]) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for p in panels {
        let name = format!("{}-{}.svg", prefix.file_name().and_then(|n| n.to_str()).unwrap_or("bench"), p.suffix);
        let path = prefix.with_file_name(name);
        let plot = Plot {
            title: p.title.clone(),
            x_label: p.x_label.clone(),
            y_label: "fraction of estimates".into(),
            x_log: false,
            y_log: false,
            series: p
                .methods
                .iter()
                .map(|(m, v)| Series { name: m.clone(), points: curve(v, p.max, p.at_least) })
                .collect(),
        };
        diffuse_core::io::write_bytes_atomic(&path, force, plot.to_svg().as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_count_within_and_at_least() {
        let v = [0.0, 1.0, 2.0, 3.0];
        let c = curve(&v, 3.0, false);
        assert_eq!((c[0], c[20], c[60]), ((0.0, 0.25), (1.0, 0.5), (3.0, 1.0)));
        let c = curve(&[0.2, 0.6], 1.0, true);
        assert_eq!((c[0].1, c[30].1, c[60].1), (1.0, 0.5, 0.0));
    }
}
