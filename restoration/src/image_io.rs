//! Reading and writing PNG and JPEG images as f32 planes, keeping what is needed to write them back the same
//! way: bit depth (8 or 16), grey or colour, the alpha plane (passed through untouched) and the file format.
//!
//! Reading refuses, before decoding any pixel and with an error naming the file: non-images and formats other
//! than PNG/JPEG, zero-sized images, images over [`MAX_SIDE`] per side or [`MAX_PIXELS`] in all, CMYK JPEGs,
//! and truncated JPEGs; corrupt and truncated PNGs fail in the decoder, also with the file named. Palette and
//! 1/2/4-bit PNGs are expanded to 8-bit RGB(A) or grey; an EXIF orientation is applied on read (the pixels come
//! out upright and are written upright, without the tag). Files are read through
//! [`diffuse_core::io::read_input`] (regular files only) and written through
//! [`diffuse_core::io::write_bytes_atomic`] (atomic, never clobbering without `force`, never an input).

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageBuffer, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::planes::Planes;
use crate::{Error, Result};

/// Largest image side accepted, in pixels (checked from the header, before decoding).
pub const MAX_SIDE: u32 = 16_384;
/// Most pixels accepted in one image (128 Mpx: its RGB f32 planes take 1.5 GiB).
pub const MAX_PIXELS: u64 = 1 << 27;
/// Most bytes the decoder may allocate for one image (`image::Limits::max_alloc`).
pub const MAX_DECODE_ALLOC: u64 = 1 << 30;
/// Largest image file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 512 << 20;
/// JPEG quality used when writing.
pub const JPEG_QUALITY: u8 = 95;

/// The file formats read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Format {
    /// PNG, 8 or 16 bits per sample.
    Png,
    /// JPEG (baseline or progressive), 8 bits per sample, no alpha.
    Jpeg,
}

impl Format {
    /// The format an extension names (`png`, `jpg`, `jpeg`, any case), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(Format::Png),
            "jpg" | "jpeg" => Some(Format::Jpeg),
            _ => None,
        }
    }
}

/// Whether `path` has an image extension this module reads (`.png`, `.jpg`, `.jpeg`).
pub fn is_image_path(path: &Path) -> bool {
    Format::from_path(path).is_some()
}

/// A decoded image: colour planes in [0, 1] plus what is needed to write it back the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Colour planes: 1 (grey) or 3 (RGB) channels, values in [0, 1].
    pub planes: Planes,
    /// The alpha plane as the file's integer values (0 … 2^bit_depth − 1), written back unchanged.
    pub alpha: Option<Vec<u16>>,
    /// Bits per sample of the file: 8 or 16.
    pub bit_depth: u8,
    /// The format the image was read from (kept on writing unless the output's extension names another).
    pub format: Format,
}

impl Image {
    /// The same image with new colour planes (a restored version), keeping alpha, bit depth and format; the
    /// planes must have the same shape.
    pub fn with_planes(&self, planes: Planes) -> Result<Image> {
        if (planes.channels, planes.height, planes.width)
            != (self.planes.channels, self.planes.height, self.planes.width)
        {
            return Err(Error::shape("Image::with_planes", self.planes.shape_text(), planes.shape_text()));
        }
        Ok(Image { planes, ..self.clone() })
    }

    /// Width × height in megapixels.
    pub fn megapixels(&self) -> f64 {
        (self.planes.width * self.planes.height) as f64 / 1e6
    }
}

/// Reads a PNG or JPEG file (see the module documentation for what is refused).
pub fn read_image(path: &Path) -> Result<Image> {
    let bytes = diffuse_core::io::read_input(path, MAX_FILE_BYTES)?;
    decode_image(&bytes, path)
}

/// Decodes the bytes of a PNG or JPEG file; `path` names it in errors.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<Image> {
    let bad = |reason: String| Error::bad_image(path, reason);
    if bytes.is_empty() {
        return Err(bad("is empty (0 bytes), not an image".into()));
    }
    let format = match image::guess_format(bytes) {
        Ok(ImageFormat::Png) => Format::Png,
        Ok(ImageFormat::Jpeg) => Format::Jpeg,
        Ok(other) => {
            let name = format!("{other:?}").to_uppercase();
            return Err(bad(format!("is a {name} image; only PNG and JPEG are supported")));
        }
        Err(_) => return Err(bad("is not a PNG or JPEG image (unrecognised content)".into())),
    };
    if format == Format::Jpeg {
        check_jpeg_structure(bytes).map_err(|r| bad(format!("JPEG {r}")))?;
    }
    let what = if format == Format::Png { "PNG" } else { "JPEG" };
    let fmt = if format == Format::Png { ImageFormat::Png } else { ImageFormat::Jpeg };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), fmt);
    reader.no_limits(); // the header is checked below, before any pixel is decoded
    let mut decoder = reader.into_decoder().map_err(|e| bad(format!("corrupt {what} header: {e}")))?;
    let (w, h) = decoder.dimensions();
    check_dimensions(w, h).map_err(bad)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    decoder.set_limits(limits).map_err(|e| bad(format!("over the decoding limits: {e}")))?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| bad(format!("corrupt or truncated {what}: {e}")))?;
    img.apply_orientation(orientation);
    from_dynamic(img, format).map_err(bad)
}

/// The size check made on the header: both sides ≥ 1, each ≤ [`MAX_SIDE`], the product ≤ [`MAX_PIXELS`].
pub fn check_dimensions(w: u32, h: u32) -> std::result::Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!("is a zero-sized image ({w}×{h} pixels)"));
    }
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!(
            "is {w}×{h} pixels, over the limit of {MAX_SIDE} pixels per side and {} megapixels in all \
             (docs/reliability.md); refused before decoding",
            MAX_PIXELS / (1 << 20)
        ));
    }
    Ok(())
}

/// Walks a JPEG's marker segments up to the first scan: refuses 4-component (CMYK/YCCK) frames, which the
/// decoder would silently turn into wrong colours, and files without an end-of-image marker after the scan
/// data (truncated: the decoder would fill the missing part with grey and report success).
fn check_jpeg_structure(b: &[u8]) -> std::result::Result<(), String> {
    let mut i = 2; // after SOI (checked by guess_format)
    loop {
        if i + 4 > b.len() {
            return Err("is truncated (it ends inside the header segments)".into());
        }
        if b[i] != 0xFF {
            return Err(format!("is corrupt (no marker at byte {i})"));
        }
        let m = b[i + 1];
        if m == 0xFF {
            i += 1; // fill byte
            continue;
        }
        if m == 0xD8 || m == 0x01 || (0xD0..=0xD7).contains(&m) {
            i += 2;
            continue;
        }
        if m == 0xD9 {
            return Err("has no image data (end marker before any scan)".into());
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        if len < 2 || i + 2 + len > b.len() {
            return Err(format!("is truncated (segment at byte {i} runs past the end of the file)"));
        }
        let is_frame = (0xC0..=0xCF).contains(&m) && m != 0xC4 && m != 0xC8 && m != 0xCC;
        if is_frame && len >= 8 && b[i + 9] == 4 {
            return Err("has 4 colour components (CMYK or YCCK), which is not supported: convert it to RGB".into());
        }
        if m == 0xDA {
            let data = &b[i + 2 + len..];
            if !data.windows(2).any(|w| w == [0xFF, 0xD9]) {
                return Err("is truncated (no end-of-image marker after the image data)".into());
            }
            return Ok(());
        }
        i += 2 + len;
    }
}

/// Splits interleaved samples with `n` values per pixel (the last one alpha when `has_alpha`) into colour
/// planes scaled by `1/max` and the raw alpha values.
fn split<T: Copy + Into<u16>>(
    s: &[T],
    w: usize,
    h: usize,
    n: usize,
    has_alpha: bool,
    max: f32,
) -> (Planes, Option<Vec<u16>>) {
    let colour = if has_alpha { n - 1 } else { n };
    let px = w * h;
    let mut planes = Planes::zeros(colour, h, w);
    for c in 0..colour {
        for (p, v) in planes.data[c * px..(c + 1) * px].iter_mut().enumerate() {
            *v = f32::from(s[p * n + c].into()) / max;
        }
    }
    let alpha = has_alpha.then(|| (0..px).map(|p| s[p * n + n - 1].into()).collect());
    (planes, alpha)
}

fn from_dynamic(img: DynamicImage, format: Format) -> std::result::Result<Image, String> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (m8, m16) = (255.0, 65_535.0);
    let ((planes, alpha), bit_depth) = match &img {
        DynamicImage::ImageLuma8(b) => (split(b.as_raw(), w, h, 1, false, m8), 8),
        DynamicImage::ImageLumaA8(b) => (split(b.as_raw(), w, h, 2, true, m8), 8),
        DynamicImage::ImageRgb8(b) => (split(b.as_raw(), w, h, 3, false, m8), 8),
        DynamicImage::ImageRgba8(b) => (split(b.as_raw(), w, h, 4, true, m8), 8),
        DynamicImage::ImageLuma16(b) => (split(b.as_raw(), w, h, 1, false, m16), 16),
        DynamicImage::ImageLumaA16(b) => (split(b.as_raw(), w, h, 2, true, m16), 16),
        DynamicImage::ImageRgb16(b) => (split(b.as_raw(), w, h, 3, false, m16), 16),
        DynamicImage::ImageRgba16(b) => (split(b.as_raw(), w, h, 4, true, m16), 16),
        other => return Err(format!("has an unsupported sample format ({:?})", other.color())),
    };
    Ok(Image { planes, alpha, bit_depth, format })
}

/// Encodes `image` in the format named by `path`'s extension (`.png`, `.jpg`, `.jpeg`; any other extension keeps
/// the image's own format): PNG keeps the bit depth, JPEG is 8-bit at quality [`JPEG_QUALITY`] and cannot hold
/// alpha (an error rather than silently dropping it). Values are clamped to [0, 1] and rounded.
pub fn encode_image(image: &Image, path: &Path) -> Result<Vec<u8>> {
    let format = Format::from_path(path).unwrap_or(image.format);
    let p = &image.planes;
    if p.channels != 1 && p.channels != 3 {
        return Err(Error::shape("encode_image", "1 or 3 colour channels", p.channels));
    }
    if image.alpha.as_ref().is_some_and(|a| a.len() != p.plane_len()) {
        return Err(Error::shape("encode_image (alpha)", p.plane_len(), image.alpha.as_ref().map_or(0, Vec::len)));
    }
    if format == Format::Jpeg && image.alpha.is_some() {
        return Err(Error::file(path, "JPEG cannot hold the image's alpha channel; write a .png instead"));
    }
    let depth = if format == Format::Jpeg { 8 } else { image.bit_depth };
    let n = p.channels + usize::from(image.alpha.is_some());
    let (w, h) = (p.width as u32, p.height as u32);
    let alpha_at = |i: usize| -> u16 {
        let a = image.alpha.as_ref().map_or(0, |a| a[i]);
        match (image.bit_depth, depth) {
            (16, 8) => ((u32::from(a) * 255 + 32_767) / 65_535) as u16,
            (8, 16) => a * 257,
            _ => a,
        }
    };
    // Interleaved samples, converted by `cast` straight into the output's sample type (no u16 copy of 8-bit data).
    fn interleave<T>(p: &Planes, alpha: Option<&dyn Fn(usize) -> u16>, max: f32, cast: fn(u16) -> T) -> Vec<T> {
        let px = p.plane_len();
        let mut out = Vec::with_capacity(px * (p.channels + usize::from(alpha.is_some())));
        for i in 0..px {
            for c in 0..p.channels {
                let v = p.data[c * px + i];
                out.push(cast(if v.is_nan() { 0 } else { (v.clamp(0.0, 1.0) * max).round() as u16 }));
            }
            if let Some(a) = alpha {
                out.push(cast(a(i)));
            }
        }
        out
    }
    let alpha = image.alpha.is_some().then_some(&alpha_at as &dyn Fn(usize) -> u16);
    let shape_err = || Error::shape("encode_image", format!("{w}×{h}×{n}"), "a different buffer length");
    let dynamic = if depth == 16 {
        let s = interleave(p, alpha, 65_535.0, |v| v);
        match n {
            1 => DynamicImage::ImageLuma16(ImageBuffer::from_raw(w, h, s).ok_or_else(shape_err)?),
            2 => DynamicImage::ImageLumaA16(ImageBuffer::from_raw(w, h, s).ok_or_else(shape_err)?),
            3 => DynamicImage::ImageRgb16(ImageBuffer::from_raw(w, h, s).ok_or_else(shape_err)?),
            _ => DynamicImage::ImageRgba16(ImageBuffer::from_raw(w, h, s).ok_or_else(shape_err)?),
        }
    } else {
        let s: Vec<u8> = interleave(p, alpha, 255.0, |v| v as u8);
        match n {
            1 => DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, s).ok_or_else(shape_err)?),
            2 => DynamicImage::ImageLumaA8(ImageBuffer::from_raw(w, h, s).ok_or_else(shape_err)?),
            3 => DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, s).ok_or_else(shape_err)?),
            _ => DynamicImage::ImageRgba8(ImageBuffer::from_raw(w, h, s).ok_or_else(shape_err)?),
        }
    };
    let mut bytes = Vec::new();
    let result = match format {
        Format::Png => dynamic.write_with_encoder(image::codecs::png::PngEncoder::new(&mut bytes)),
        Format::Jpeg => {
            dynamic.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY))
        }
    };
    result.map_err(|e| Error::file(path, format!("cannot encode the image: {e}")))?;
    Ok(bytes)
}

/// Writes `image` to `path` atomically ([`encode_image`] chooses the format); an existing file is kept unless
/// `force`, and an input of this run is never replaced.
pub fn write_image(image: &Image, path: &Path, force: bool) -> Result<()> {
    diffuse_core::io::check_output(path, force)?;
    let bytes = encode_image(image, path)?;
    diffuse_core::io::write_bytes_atomic(path, force, &bytes)?;
    Ok(())
}

#[cfg(test)]
#[path = "image_io_tests.rs"]
mod tests;
