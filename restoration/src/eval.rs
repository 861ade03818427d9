//! Scoring a folder of restored images against a folder of clean ones (`diffuse restore eval`): files are
//! matched by their path relative to each folder (a restored file may differ in image extension, `a.png` ↔
//! `a.jpg`); unmatched files on either side are reported, and a file that fails does not stop the others.

use std::path::{Path, PathBuf};

use crate::image_io::{Format, is_image_path, read_image};
use crate::metrics::{psnr, ssim};
use crate::{Error, Result};

/// The scores of one file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EvalRow {
    /// Path relative to the clean folder.
    pub file: PathBuf,
    /// The restored file it was matched with, relative to the restored folder.
    pub restored: PathBuf,
    /// PSNR in dB (`+∞`, `null` in JSON, for identical images).
    pub psnr: f64,
    /// SSIM.
    pub ssim: f64,
}

/// Every score, failure and unmatched file of an evaluation.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EvalReport {
    /// Scored files, sorted by path.
    pub rows: Vec<EvalRow>,
    /// Clean files that could not be scored (no restored file, unreadable, different size), with the reason.
    pub failures: Vec<(PathBuf, String)>,
    /// Restored images with no clean counterpart (relative to the restored folder).
    pub unmatched: Vec<PathBuf>,
}

impl EvalReport {
    /// Mean PSNR and mean SSIM over the scored files (the PSNR mean is `+∞` if any file is identical).
    pub fn means(&self) -> Option<(f64, f64)> {
        if self.rows.is_empty() {
            return None;
        }
        let n = self.rows.len() as f64;
        Some((self.rows.iter().map(|r| r.psnr).sum::<f64>() / n, self.rows.iter().map(|r| r.ssim).sum::<f64>() / n))
    }
}

/// The image files under `dir` (`.png`, `.jpg`, `.jpeg`, regular files only), relative to it, sorted.
pub fn relative_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::file(dir, "is not a folder"));
    }
    let files = diffuse_core::io::walk_files(dir, &is_image_path)?;
    Ok(files.into_iter().map(|f| f.strip_prefix(dir).map(Path::to_path_buf).unwrap_or(f)).collect())
}

/// The restored file for clean file `rel`: the same relative path, else the same path with another image
/// extension (in sorted order).
fn find_match(rel: &Path, restored: &[PathBuf]) -> Option<PathBuf> {
    if restored.iter().any(|r| r == rel) {
        return Some(rel.to_path_buf());
    }
    let stem = rel.with_extension("");
    restored.iter().find(|r| r.with_extension("") == stem && Format::from_path(r).is_some()).cloned()
}

/// Scores one pair of images (PSNR and SSIM on the colour planes; alpha ignored).
pub fn score_pair(clean: &Path, restored: &Path) -> Result<(f64, f64)> {
    let a = read_image(clean)?;
    let b = read_image(restored)?;
    let (pa, pb) = (&a.planes, &b.planes);
    if (pa.channels, pa.height, pa.width) != (pb.channels, pb.height, pb.width) {
        return Err(Error::file(
            restored,
            format!(
                "is {}×{} with {} channel(s), but the clean image {} is {}×{} with {}",
                pb.width,
                pb.height,
                pb.channels,
                clean.display(),
                pa.width,
                pa.height,
                pa.channels
            ),
        ));
    }
    let s = ssim(pa, pb).map_err(|e| Error::file(clean, e))?;
    Ok((psnr(pa, pb)?, s))
}

/// Scores every clean image under `clean_dir` against its match under `restored_dir`.
pub fn evaluate(clean_dir: &Path, restored_dir: &Path) -> Result<EvalReport> {
    let clean = relative_images(clean_dir)?;
    let restored = relative_images(restored_dir)?;
    if clean.is_empty() {
        return Err(Error::file(clean_dir, "has no .png, .jpg or .jpeg images"));
    }
    let mut report = EvalReport::default();
    let mut used = Vec::new();
    for rel in clean {
        let Some(m) = find_match(&rel, &restored) else {
            let why = format!("no restored image {} (or another extension)", restored_dir.join(&rel).display());
            report.failures.push((rel, why));
            continue;
        };
        used.push(m.clone());
        match score_pair(&clean_dir.join(&rel), &restored_dir.join(&m)) {
            Ok((p, s)) => report.rows.push(EvalRow { file: rel, restored: m, psnr: p, ssim: s }),
            Err(e) => report.failures.push((rel, e.to_string())),
        }
    }
    report.unmatched = restored.into_iter().filter(|r| !used.contains(r)).collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_io::{Image, write_image};
    use crate::planes::Planes;

    fn write(path: &Path, v: f32, size: usize) {
        let data = (0..3 * size * size).map(|i| (v + (i % 13) as f32 / 50.0).min(1.0)).collect();
        let img =
            Image { planes: Planes::new(3, size, size, data).unwrap(), alpha: None, bit_depth: 8, format: Format::Png };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_image(&img, path, false).unwrap();
    }

    #[test]
    fn folders_are_matched_by_relative_path_and_problems_reported() {
        let t = tempfile::tempdir().unwrap();
        let (c, r) = (t.path().join("clean"), t.path().join("restored"));
        write(&c.join("a.png"), 0.2, 16);
        write(&r.join("a.png"), 0.2, 16);
        write(&c.join("sub/b.png"), 0.4, 16);
        write(&r.join("sub/b.png"), 0.45, 16);
        write(&c.join("c.png"), 0.1, 16); // no match
        write(&c.join("d.png"), 0.1, 16);
        write(&r.join("d.png"), 0.1, 20); // other size
        write(&r.join("extra.png"), 0.1, 16);
        std::fs::write(c.join("notes.txt"), "not an image").unwrap();
        let rep = evaluate(&c, &r).unwrap();
        assert_eq!(rep.rows.len(), 2);
        assert_eq!(rep.rows[0].file, PathBuf::from("a.png"));
        assert_eq!(rep.rows[0].psnr, f64::INFINITY);
        assert!(rep.rows[1].psnr.is_finite() && rep.rows[1].ssim < 1.0);
        let failed: Vec<_> = rep.failures.iter().map(|f| f.0.to_string_lossy().into_owned()).collect();
        assert_eq!(failed, ["c.png", "d.png"]);
        assert!(rep.failures[1].1.contains("20×20"), "{}", rep.failures[1].1);
        assert_eq!(rep.unmatched, [PathBuf::from("extra.png")]);
        assert!(rep.means().unwrap().0.is_infinite());
        assert!(evaluate(&c.join("a.png"), &r).is_err());
    }

    #[test]
    fn a_restored_file_may_have_another_extension() {
        assert_eq!(find_match(Path::new("x/a.png"), &[PathBuf::from("x/a.jpg")]), Some(PathBuf::from("x/a.jpg")));
        assert_eq!(find_match(Path::new("a.png"), &[PathBuf::from("b.png")]), None);
    }
}
