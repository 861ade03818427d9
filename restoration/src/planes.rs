//! Images as f32 planes (channels × height × width, values in [0, 1]): reflect padding to a network's size
//! multiple, cropping, and tiling with raised-cosine blending so a per-tile function runs in bounded memory.

use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Pixel values as planes: `data[(c·height + y)·width + x]`, nominally in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    /// Number of channels (1 grey, 3 RGB).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `channels × height × width` values.
    pub data: Vec<f32>,
}

impl Planes {
    /// Planes of zeros.
    pub fn zeros(channels: usize, height: usize, width: usize) -> Self {
        Planes { channels, height, width, data: vec![0.0; channels * height * width] }
    }

    /// Planes from `data` (length `channels × height × width`, else a shape error).
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != channels * height * width {
            return Err(Error::shape("Planes::new", format!("{channels}×{height}×{width} values"), data.len()));
        }
        Ok(Planes { channels, height, width, data })
    }

    /// Values per plane (`height × width`).
    pub fn plane_len(&self) -> usize {
        self.height * self.width
    }

    /// Channel `c` as a slice of `height × width` values.
    pub fn plane(&self, c: usize) -> &[f32] {
        &self.data[c * self.plane_len()..(c + 1) * self.plane_len()]
    }

    /// Value at channel `c`, row `y`, column `x`.
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// `"C×H×W"`, for messages.
    pub fn shape_text(&self) -> String {
        format!("{}×{}×{}", self.channels, self.height, self.width)
    }

    /// Each value rounded to the nearest of the 256 levels of an 8-bit file: `round(255·clamp(v, 0, 1)) / 255`.
    pub fn quantize_8bit(&mut self) {
        for v in &mut self.data {
            *v = (v.clamp(0.0, 1.0) * 255.0).round() / 255.0;
        }
    }

    /// The planes as a float tensor of shape `[channels, height, width]` (CPU).
    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.data).view([self.channels as i64, self.height as i64, self.width as i64])
    }

    /// Planes from a `[channels, height, width]` tensor (any float kind, any device).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let size = t.size();
        let [c, h, w] = size[..] else {
            return Err(Error::shape("Planes::from_tensor", "[C, H, W]", format!("{size:?}")));
        };
        let flat = t.f_to_kind(Kind::Float)?.f_to_device(tch::Device::Cpu)?.f_contiguous()?.f_view([-1])?;
        let data = Vec::<f32>::try_from(&flat)?;
        Planes::new(c as usize, h as usize, w as usize, data)
    }

    /// Reflect-pads at the bottom and right so both sides are multiples of `multiple` (a network's downsampling
    /// factor). Reflection excludes the edge pixel (`… c b | a b c …`, as torch's `reflect`) and repeats as a
    /// mirror when the padding is longer than the image. Undo with [`Planes::crop`]`(0, 0, height, width)`.
    pub fn pad_reflect(&self, multiple: usize) -> Planes {
        let m = multiple.max(1);
        let (h, w) = (self.height.div_ceil(m) * m, self.width.div_ceil(m) * m);
        let mut out = Planes::zeros(self.channels, h, w);
        for c in 0..self.channels {
            for y in 0..h {
                let sy = mirror(y, self.height);
                for x in 0..w {
                    out.data[(c * h + y) * w + x] = self.at(c, sy, mirror(x, self.width));
                }
            }
        }
        out
    }

    /// The `height × width` window whose top-left pixel is (`top`, `left`); a shape error if it does not fit.
    pub fn crop(&self, top: usize, left: usize, height: usize, width: usize) -> Result<Planes> {
        if top + height > self.height || left + width > self.width {
            return Err(Error::shape(
                "Planes::crop",
                format!("a window inside {}×{}", self.height, self.width),
                format!("{height}×{width} at ({top}, {left})"),
            ));
        }
        let mut data = Vec::with_capacity(self.channels * height * width);
        for c in 0..self.channels {
            for y in top..top + height {
                let row = (c * self.height + y) * self.width;
                data.extend_from_slice(&self.data[row + left..row + left + width]);
            }
        }
        Ok(Planes { channels: self.channels, height, width, data })
    }
}

/// Index `i` of a padded axis mapped into `0..n` by mirroring without repeating the edge (period `2(n − 1)`).
fn mirror(i: usize, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let k = i % period;
    if k < n { k } else { period - k }
}

/// How an image is cut into tiles: square tiles of `tile` pixels overlapping by `overlap` pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Tile side in pixels (the last tile of a row or column is moved back to end at the image edge, so every
    /// tile has this size when the image is at least this large).
    pub tile: usize,
    /// Overlap between neighbouring tiles, blended with raised-cosine weights; must be less than `tile`.
    pub overlap: usize,
}

impl Tiling {
    /// Start offsets of the tiles along an axis of length `n`: `0, s, 2s, …` with stride `s = tile − overlap`,
    /// the last one at `n − tile`; a single tile of the whole axis when `n ≤ tile`.
    pub fn starts(&self, n: usize) -> Vec<usize> {
        if n <= self.tile {
            return vec![0];
        }
        let stride = self.tile - self.overlap;
        let mut s: Vec<usize> = (0..).map(|k| k * stride).take_while(|&p| p + self.tile < n).collect();
        s.push(n - self.tile);
        s
    }

    /// The blending weight of local position `i` of a tile of `len` pixels along one axis: a raised-cosine ramp
    /// `w(i) = ½ − ½·cos(π·(i + ½)/overlap)` over the first `overlap` pixels when a tile precedes it, the mirror
    /// ramp over the last `overlap` pixels when one follows, and 1 elsewhere (image borders included). Always > 0.
    fn weight(&self, i: usize, len: usize, has_prev: bool, has_next: bool) -> f32 {
        let o = self.overlap.min(len);
        let ramp = |j: usize| 0.5 - 0.5 * (std::f32::consts::PI * (j as f32 + 0.5) / o as f32).cos();
        let mut w = 1.0f32;
        if has_prev && i < o {
            w *= ramp(i);
        }
        if has_next && i + o >= len {
            w *= ramp(len - 1 - i);
        }
        w
    }

    /// Applies `f` to every tile of `input` and blends the results: `out = Σ_k w_k·f(tile_k) / Σ_k w_k` with
    /// separable weights `w_k(y, x) = w(y)·w(x)`, so the normaliser is the product of two per-axis sums and needs
    /// no image-sized buffer. `f` must return planes of the tile's size (channels may change, e.g. grey → RGB is
    /// refused: the channel count must be the input's).
    ///
    /// Memory: the input, one output of the same size, one tile in and one out, and two per-axis weight vectors.
    /// For a 24-megapixel RGB photo (6000 × 4000) that is 2 × 288 MB of f32 planes plus the tile's own work
    /// (for 256-pixel tiles, 0.8 MB of planes plus whatever the network needs for one 256 × 256 input), whatever
    /// the photo's size: about 0.6 GB in all, against tens of GB for a U-Net run on the whole photo.
    pub fn apply(&self, input: &Planes, mut f: impl FnMut(&Planes) -> Result<Planes>) -> Result<Planes> {
        if self.tile == 0 || self.overlap >= self.tile {
            return Err(Error::invalid(
                "tiling",
                format!("overlap {} must be less than tile {}", self.overlap, self.tile),
            ));
        }
        let (ys, xs) = (self.starts(input.height), self.starts(input.width));
        let (th, tw) = (self.tile.min(input.height), self.tile.min(input.width));
        let axis_weights = |starts: &[usize], len: usize| -> Vec<Vec<f32>> {
            (0..starts.len())
                .map(|k| (0..len).map(|i| self.weight(i, len, k > 0, k + 1 < starts.len())).collect())
                .collect()
        };
        let (wy, wx) = (axis_weights(&ys, th), axis_weights(&xs, tw));
        let axis_sum = |starts: &[usize], w: &[Vec<f32>], n: usize| -> Vec<f32> {
            let mut s = vec![0.0f32; n];
            for (k, &p) in starts.iter().enumerate() {
                for (i, v) in w[k].iter().enumerate() {
                    s[p + i] += v;
                }
            }
            s
        };
        let (sy, sx) = (axis_sum(&ys, &wy, input.height), axis_sum(&xs, &wx, input.width));
        let mut out = Planes::zeros(input.channels, input.height, input.width);
        for (ky, &y0) in ys.iter().enumerate() {
            for (kx, &x0) in xs.iter().enumerate() {
                let tile = input.crop(y0, x0, th, tw)?;
                let r = f(&tile)?;
                if (r.channels, r.height, r.width) != (tile.channels, tile.height, tile.width) {
                    return Err(Error::shape("Tiling::apply (per-tile function)", tile.shape_text(), r.shape_text()));
                }
                for c in 0..input.channels {
                    for i in 0..th {
                        let w_row = wy[ky][i] / sy[y0 + i];
                        let dst = (c * input.height + y0 + i) * input.width + x0;
                        let src = (c * th + i) * tw;
                        for j in 0..tw {
                            out.data[dst + j] += r.data[src + j] * (w_row * (wx[kx][j] / sx[x0 + j]));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp_image(c: usize, h: usize, w: usize) -> Planes {
        let data = (0..c * h * w).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        Planes::new(c, h, w, data).unwrap()
    }

    #[test]
    fn reflect_padding_mirrors_without_repeating_the_edge_and_crop_undoes_it() {
        let p = Planes::new(1, 1, 3, vec![0.1, 0.2, 0.3]).unwrap();
        let padded = p.pad_reflect(8);
        assert_eq!((padded.height, padded.width), (8, 8));
        assert_eq!(&padded.data[..8], &[0.1, 0.2, 0.3, 0.2, 0.1, 0.2, 0.3, 0.2]);
        let img = ramp_image(3, 13, 21);
        let padded = img.pad_reflect(16);
        assert_eq!((padded.height, padded.width), (16, 32));
        assert_eq!(padded.crop(0, 0, 13, 21).unwrap(), img);
        assert_eq!(img.pad_reflect(1), img);
        assert!(img.crop(10, 0, 4, 21).is_err());
    }

    #[test]
    fn tiles_cover_the_image_and_end_at_its_edge() {
        let t = Tiling { tile: 64, overlap: 16 };
        assert_eq!(t.starts(50), vec![0]);
        assert_eq!(t.starts(64), vec![0]);
        assert_eq!(t.starts(100), vec![0, 36]);
        assert_eq!(t.starts(200), vec![0, 48, 96, 136]);
    }

    #[test]
    fn identity_per_tile_function_reconstructs_the_image() {
        let img = ramp_image(3, 150, 97);
        for tiling in
            [Tiling { tile: 32, overlap: 8 }, Tiling { tile: 64, overlap: 31 }, Tiling { tile: 200, overlap: 4 }]
        {
            let mut calls = 0;
            let out = tiling
                .apply(&img, |t| {
                    calls += 1;
                    Ok(t.clone())
                })
                .unwrap();
            let err = out.data.iter().zip(&img.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(err < 1e-6, "{tiling:?}: max error {err}");
            assert_eq!(calls, tiling.starts(150).len() * tiling.starts(97).len());
        }
    }

    #[test]
    fn blending_is_smooth_where_tiles_disagree() {
        // Each tile returns a constant (its index): the blend must move between them without jumps.
        let img = Planes::zeros(1, 8, 100);
        let t = Tiling { tile: 40, overlap: 20 };
        let mut k = 0.0;
        let out = t
            .apply(&img, |tile| {
                k += 1.0;
                Ok(Planes { data: vec![k; tile.data.len()], ..tile.clone() })
            })
            .unwrap();
        let row = &out.data[..100];
        let max_step = row.windows(2).map(|w| (w[1] - w[0]).abs()).fold(0.0f32, f32::max);
        assert!(max_step < 0.2, "largest jump {max_step}");
        assert!((row[0] - 1.0).abs() < 1e-6 && (row[99] - k).abs() < 1e-6);
    }

    #[test]
    fn bad_tilings_and_wrong_tile_outputs_are_errors() {
        let img = ramp_image(1, 20, 20);
        assert!(Tiling { tile: 8, overlap: 8 }.apply(&img, |t| Ok(t.clone())).is_err());
        let err = Tiling { tile: 8, overlap: 2 }.apply(&img, |t| t.crop(0, 0, 4, 4)).unwrap_err();
        assert!(err.to_string().contains("per-tile"), "{err}");
    }

    #[test]
    fn tensor_round_trip() {
        let img = ramp_image(3, 5, 7);
        let t = img.to_tensor();
        assert_eq!(t.size(), vec![3, 5, 7]);
        assert_eq!(Planes::from_tensor(&t).unwrap(), img);
    }
}
