//! Tests of image_io: round trips of every format, depth and colour type; EXIF orientation; bad files.

use super::*;
use std::path::PathBuf;

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    c.extend_from_slice(&body);
    c.extend_from_slice(&crc32(&body).to_be_bytes());
    c
}

/// A PNG with the given IHDR fields and raw (unfiltered, stored-deflate) rows.
fn raw_png(w: u32, h: u32, depth: u8, colour: u8, extra: &[([u8; 4], Vec<u8>)], rows: &[u8]) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
    b.extend(png_chunk(b"IHDR", &ihdr));
    for (k, d) in extra {
        b.extend(png_chunk(k, d));
    }
    let mut z = vec![0x78, 0x01, 0x01];
    z.extend_from_slice(&(rows.len() as u16).to_le_bytes());
    z.extend_from_slice(&(!(rows.len() as u16)).to_le_bytes());
    z.extend_from_slice(rows);
    let (mut a, mut s) = (1u32, 0u32);
    for &r in rows {
        a = (a + u32::from(r)) % 65_521;
        s = (s + a) % 65_521;
    }
    z.extend_from_slice(&((s << 16) | a).to_be_bytes());
    b.extend(png_chunk(b"IDAT", &z));
    b.extend(png_chunk(b"IEND", &[]));
    b
}

/// Planes whose values sit exactly on the levels of a `depth`-bit file.
fn levels(c: usize, h: usize, w: usize, depth: u8) -> Planes {
    let max = if depth == 16 { 65_535.0 } else { 255.0 };
    let step = if depth == 16 { 4099 } else { 37 };
    let data = (0..c * h * w).map(|i| ((i * step) % (max as usize + 1)) as f32 / max).collect();
    Planes::new(c, h, w, data).unwrap()
}

fn smooth(c: usize, h: usize, w: usize) -> Planes {
    let mut p = Planes::zeros(c, h, w);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                p.data[(ch * h + y) * w + x] =
                    0.5 + 0.4 * ((x as f32 * 0.2 + ch as f32).sin() * (y as f32 * 0.15).cos());
            }
        }
    }
    p
}

fn max_diff(a: &Planes, b: &Planes) -> f32 {
    a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn err_of(bytes: &[u8], name: &str) -> String {
    decode_image(bytes, Path::new(name)).unwrap_err().to_string()
}

#[test]
fn png_round_trips_every_depth_and_colour_type_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for depth in [8u8, 16] {
        for (channels, with_alpha) in [(1, false), (1, true), (3, false), (3, true)] {
            let planes = levels(channels, 9, 13, depth);
            let alpha = with_alpha.then(|| (0..9 * 13).map(|i| (i * 7 % 200) as u16 * (depth as u16 - 7)).collect());
            let img = Image { planes, alpha, bit_depth: depth, format: Format::Png };
            let path = dir.path().join(format!("x{depth}-{channels}-{with_alpha}.png"));
            write_image(&img, &path, false).unwrap();
            let back = read_image(&path).unwrap();
            assert_eq!(back, img, "depth {depth}, {channels} channels, alpha {with_alpha}");
        }
    }
}

#[test]
fn rgba_alpha_is_passed_through_untouched_when_the_colour_changes() {
    let dir = tempfile::tempdir().unwrap();
    let alpha: Vec<u16> = (0..16 * 16).map(|i| (i % 256) as u16).collect();
    let img = Image { planes: levels(3, 16, 16, 8), alpha: Some(alpha.clone()), bit_depth: 8, format: Format::Png };
    let mut restored = img.planes.clone();
    restored.data.iter_mut().for_each(|v| *v = 1.0 - *v);
    let out = img.with_planes(restored).unwrap();
    let path = dir.path().join("rgba.png");
    write_image(&out, &path, false).unwrap();
    let back = read_image(&path).unwrap();
    assert_eq!(back.alpha.as_deref(), Some(&alpha[..]));
    assert!(img.with_planes(Planes::zeros(3, 4, 4)).is_err());
}

#[test]
fn jpeg_round_trips_grey_and_rgb_and_the_extension_chooses_the_format() {
    let dir = tempfile::tempdir().unwrap();
    for channels in [1, 3] {
        let img = Image { planes: smooth(channels, 32, 40), alpha: None, bit_depth: 8, format: Format::Jpeg };
        let path = dir.path().join(format!("c{channels}.jpg"));
        write_image(&img, &path, false).unwrap();
        let back = read_image(&path).unwrap();
        assert_eq!((back.format, back.bit_depth, back.planes.channels), (Format::Jpeg, 8, channels));
        assert!(max_diff(&back.planes, &img.planes) < 0.06, "{}", max_diff(&back.planes, &img.planes));
    }
    // A 16-bit PNG written as .jpg becomes an 8-bit JPEG; as .png it stays 16-bit; unknown extensions keep it.
    let img16 = Image { planes: levels(3, 8, 8, 16), alpha: None, bit_depth: 16, format: Format::Png };
    write_image(&img16, &dir.path().join("a.JPEG"), false).unwrap();
    assert_eq!(read_image(&dir.path().join("a.JPEG")).unwrap().format, Format::Jpeg);
    write_image(&img16, &dir.path().join("a.img"), false).unwrap();
    assert_eq!(read_image(&dir.path().join("a.img")).unwrap(), img16);
    // Alpha cannot go into a JPEG.
    let rgba = Image { alpha: Some(vec![255; 64]), ..img16.clone() };
    let err = write_image(&rgba, &dir.path().join("b.jpg"), false).unwrap_err().to_string();
    assert!(err.contains("b.jpg") && err.contains("alpha"), "{err}");
    // No clobbering without force.
    let err = write_image(&img16, &dir.path().join("a.img"), false).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    write_image(&img16, &dir.path().join("a.img"), true).unwrap();
}

#[test]
fn palette_and_low_bit_depth_pngs_are_expanded() {
    // 2×2 palette image: indices 0 1 / 2 0 into red, green, blue.
    let plte = vec![255, 0, 0, 0, 255, 0, 0, 0, 255];
    let png = raw_png(2, 2, 8, 3, &[(*b"PLTE", plte)], &[0, 0, 1, 0, 2, 0]);
    let img = decode_image(&png, Path::new("pal.png")).unwrap();
    assert_eq!((img.planes.channels, img.bit_depth, img.alpha.is_none()), (3, 8, true));
    assert_eq!(img.planes.plane(0), &[1.0, 0.0, 0.0, 1.0]);
    assert_eq!(img.planes.plane(2), &[0.0, 0.0, 1.0, 0.0]);
    // 1-bit grey: 0b1010_0000 → white, black.
    let png = raw_png(2, 1, 1, 0, &[], &[0, 0b1000_0000]);
    let img = decode_image(&png, Path::new("bits.png")).unwrap();
    assert_eq!((img.planes.channels, img.bit_depth), (1, 8));
    assert_eq!(img.planes.data, vec![1.0, 0.0]);
}

/// A JPEG of `w × h` (left half black, right half white) with an EXIF APP1 orientation tag.
fn jpeg_with_orientation(w: usize, h: usize, orientation: u16) -> Vec<u8> {
    let mut p = Planes::zeros(3, h, w);
    for c in 0..3 {
        for y in 0..h {
            for x in w / 2..w {
                p.data[(c * h + y) * w + x] = 1.0;
            }
        }
    }
    let img = Image { planes: p, alpha: None, bit_depth: 8, format: Format::Jpeg };
    let jpeg = encode_image(&img, Path::new("x.jpg")).unwrap();
    let mut tiff = b"II*\x00\x08\x00\x00\x00\x01\x00".to_vec(); // little-endian TIFF, IFD at 8, one entry
    tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0]); // tag 0x0112 SHORT ×1
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // value padding, next IFD = 0
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_applied_on_read() {
    let plain = decode_image(&jpeg_with_orientation(32, 16, 1), Path::new("o1.jpg")).unwrap();
    assert_eq!((plain.planes.width, plain.planes.height), (32, 16));
    // 6 = rotate 90° clockwise: the image becomes 16 wide, 32 high; the black left half goes to the top.
    let rotated = decode_image(&jpeg_with_orientation(32, 16, 6), Path::new("o6.jpg")).unwrap();
    let p = &rotated.planes;
    assert_eq!((p.width, p.height), (16, 32));
    assert!(p.at(0, 2, 8) < 0.1 && p.at(0, 29, 8) > 0.9, "top {} bottom {}", p.at(0, 2, 8), p.at(0, 29, 8));
    // 3 = rotate 180°: black goes right.
    let r180 = decode_image(&jpeg_with_orientation(32, 16, 3), Path::new("o3.jpg")).unwrap();
    assert!(r180.planes.at(0, 8, 2) > 0.9 && r180.planes.at(0, 8, 29) < 0.1);
}

fn png_with_size(w: u32, h: u32) -> Vec<u8> {
    let mut b = raw_png(1, 1, 8, 0, &[], &[0, 128]);
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&b[12..29]);
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn huge_and_zero_sized_headers_are_refused_before_decoding() {
    let t = std::time::Instant::now();
    let err = err_of(&png_with_size(40_000, 40_000), "huge.png");
    assert!(err.contains("huge.png") && err.contains("40000×40000") && err.contains("limit"), "{err}");
    assert!(t.elapsed().as_secs_f64() < 1.0);
    let err = err_of(&png_with_size(16_000, 16_000), "many.png");
    assert!(err.contains("megapixels"), "{err}");
    let err = err_of(&png_with_size(0, 5), "zero.png");
    assert!(err.contains("zero.png"), "{err}");
    assert!(check_dimensions(0, 5).unwrap_err().contains("zero-sized"));
    assert!(check_dimensions(MAX_SIDE, 4096).is_ok());
}

#[test]
fn corrupt_truncated_and_foreign_files_are_named_errors() {
    let noisy = Planes::new(3, 64, 64, (0..3 * 64 * 64).map(|i| ((i * 7919) % 256) as f32 / 255.0).collect()).unwrap();
    let png =
        encode_image(&Image { planes: noisy, alpha: None, bit_depth: 8, format: Format::Png }, Path::new("a.png"))
            .unwrap();
    let err = err_of(&png[..png.len() / 2], "cut.png");
    assert!(err.contains("cut.png") && err.contains("PNG"), "{err}");
    let mut bad = png.clone();
    bad[40..60].iter_mut().for_each(|b| *b ^= 0x5A);
    assert!(err_of(&bad, "flip.png").contains("flip.png"));

    let jpeg = jpeg_with_orientation(64, 64, 1);
    let err = err_of(&jpeg[..jpeg.len() * 6 / 10], "cut.jpg");
    assert!(err.contains("cut.jpg") && err.contains("truncated"), "{err}");
    // A 4-component frame (CMYK): patch the SOF component count.
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let mut cmyk = jpeg.clone();
    cmyk[sof + 9] = 4;
    let err = err_of(&cmyk, "cmyk.jpg");
    assert!(err.contains("cmyk.jpg") && err.contains("CMYK"), "{err}");

    assert!(err_of(b"hello, not an image", "notes.png").contains("not a PNG or JPEG"));
    assert!(err_of(b"", "empty.png").contains("empty"));
    let err = err_of(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "anim.gif");
    assert!(err.contains("anim.gif") && err.contains("only PNG and JPEG"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let err = read_image(dir.path()).unwrap_err().to_string();
    assert!(err.contains("folder"), "{err}");
}

#[test]
fn a_real_cmyk_jpeg_is_refused_by_name() {
    // Made by Pillow (tools/make_ssim_fixtures.py): 4 components, Adobe APP14 marker.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/restoration/cmyk.jpg");
    let err = read_image(&path).unwrap_err().to_string();
    assert!(err.contains("cmyk.jpg") && err.contains("CMYK"), "{err}");
}
