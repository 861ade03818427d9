//! PLY input and output (ascii and binary), through ply-rs-bw.
//!
//! Read: element `vertex` with scalar properties `x y z` (any numeric type), optionally `nx ny nz` and
//! `red green blue` (integers 0–255, or floats in [0, 1]); an optional element `face` with a list property
//! `vertex_indices` (or `vertex_index`), fan-triangulated. Other elements and properties are ignored.
//! Write: `float x y z`, `float nx ny nz` and `uchar red green blue` when present, `face` lists when given;
//! to a temporary file renamed into place, so a failed write never leaves a partial file.

use std::io::{BufWriter, Write};
use std::path::Path;

use nalgebra::{Point3, Vector3};
use ply_rs_bw::parser::Parser;
use ply_rs_bw::ply::{
    Addable, DefaultElement, ElementDef, Encoding, Ply, Property, PropertyDef, PropertyType, ScalarType,
};
use ply_rs_bw::writer::Writer;

use crate::cloud::PointCloud;
use crate::error::{Error, Result};

/// The contents of a PLY file: the vertex cloud and its triangles (empty for a bare point cloud).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlyData {
    /// Vertices with their normals and colours when the file has them.
    pub cloud: PointCloud,
    /// Triangles as vertex indices (polygons are fan-triangulated).
    pub triangles: Vec<[u32; 3]>,
}

impl PlyData {
    /// The cloud to register as an object model: `n` area-weighted surface samples (with face normals, fixed
    /// `seed`) when the file has triangles, else the vertices as they are. Validates the vertices first, so
    /// errors name `what` and the vertex at fault.
    pub fn model_cloud(&self, what: &str, n: usize, seed: u64) -> Result<PointCloud> {
        self.cloud.validate(what, if self.triangles.is_empty() { crate::registration::MIN_POINTS } else { 3 })?;
        if self.triangles.is_empty() {
            return Ok(self.cloud.clone());
        }
        let mesh = crate::mesh::TriMesh::new(self.cloud.points.clone(), self.triangles.clone())?;
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        mesh.sample_surface(n, &mut rng)
            .map_err(|_| Error::Degenerate { what: what.into(), reason: "its triangles have zero total area".into() })
    }
}

/// How [`write_ply`] encodes the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlyEncoding {
    /// Human-readable text.
    Ascii,
    /// Little-endian binary (compact, what most tools write).
    BinaryLittleEndian,
}

/// Reads a PLY file; errors name the file and, for content problems, the element and property.
pub fn read_ply(path: &Path) -> Result<PlyData> {
    let bytes = diffuse_core::io::read_input(path, MAX_PLY_BYTES).map_err(file_error)?;
    read_ply_bytes(&bytes, path)
}

/// Parses PLY bytes; `name` is the file name used in errors.
pub fn read_ply_bytes(bytes: &[u8], name: &Path) -> Result<PlyData> {
    let parser = Parser::<DefaultElement>::new();
    let header = parser
        .read_ply_header(&mut &bytes[..])
        .map_err(|e| Error::ply(name, format!("not a readable PLY file: {e}")))?;
    check_counts(&header, bytes, name)?;
    let mut src = bytes;
    let ply = parser.read_ply(&mut src).map_err(|e| Error::ply(name, format!("not a readable PLY file: {e}")))?;
    let vdef = ply.header.elements.get("vertex").ok_or_else(|| {
        let found: Vec<&str> = ply.header.elements.keys().map(String::as_str).collect();
        Error::ply(name, format!("no element 'vertex' (elements found: {})", list_or_none(&found)))
    })?;
    for p in ["x", "y", "z"] {
        scalar_def(name, vdef, p)?.ok_or_else(|| {
            let found: Vec<&str> = vdef.properties.keys().map(String::as_str).collect();
            Error::ply(name, format!("element 'vertex' has no property '{p}' (properties: {})", list_or_none(&found)))
        })?;
    }
    let has_normals = optional_triplet(name, vdef, ["nx", "ny", "nz"])?;
    let has_colors = optional_triplet(name, vdef, ["red", "green", "blue"])?;
    let float_colors = has_colors
        && matches!(
            vdef.properties.get("red").map(|d| &d.data_type),
            Some(PropertyType::Scalar(ScalarType::Float | ScalarType::Double))
        );
    let empty = Vec::new();
    let vertices = ply.payload.get("vertex").unwrap_or(&empty);
    let mut cloud = PointCloud {
        points: Vec::with_capacity(vertices.len()),
        normals: has_normals.then(|| Vec::with_capacity(vertices.len())),
        colors: has_colors.then(|| Vec::with_capacity(vertices.len())),
    };
    let get = |v: &DefaultElement, i: usize, p: &str| -> Result<f64> {
        v.get(p)
            .and_then(scalar_f64)
            .ok_or_else(|| Error::ply(name, format!("element 'vertex' {i}: property '{p}' is missing or not a number")))
    };
    for (i, v) in vertices.iter().enumerate() {
        cloud.points.push(Point3::new(get(v, i, "x")?, get(v, i, "y")?, get(v, i, "z")?));
        if let Some(ns) = cloud.normals.as_mut() {
            ns.push(Vector3::new(get(v, i, "nx")?, get(v, i, "ny")?, get(v, i, "nz")?));
        }
        if let Some(cs) = cloud.colors.as_mut() {
            let mut c = [0u8; 3];
            for (k, p) in ["red", "green", "blue"].iter().enumerate() {
                let x = get(v, i, p)?;
                let x = if float_colors { x * 255.0 } else { x };
                c[k] = x.round().clamp(0.0, 255.0) as u8;
            }
            cs.push(c);
        }
    }
    let mut triangles = Vec::new();
    if let Some(fdef) = ply.header.elements.get("face") {
        let key = ["vertex_indices", "vertex_index"].into_iter().find(|k| fdef.properties.contains_key(*k));
        let Some(key) = key else {
            return Err(Error::ply(name, "element 'face' has no list property 'vertex_indices' or 'vertex_index'"));
        };
        if !matches!(fdef.properties[key].data_type, PropertyType::List(..)) {
            return Err(Error::ply(name, format!("element 'face' property '{key}' is not a list")));
        }
        let n = cloud.points.len();
        for (fi, f) in ply.payload.get("face").unwrap_or(&empty).iter().enumerate() {
            let idx = f.get(key).and_then(list_indices).ok_or_else(|| {
                Error::ply(name, format!("element 'face' {fi}: property '{key}' is not an integer list"))
            })?;
            if let Some(bad) = idx.iter().find(|&&k| k < 0 || k as usize >= n) {
                return Err(Error::ply(name, format!("element 'face' {fi}: vertex index {bad} out of range (0..{n})")));
            }
            for k in 1..idx.len().saturating_sub(1) {
                triangles.push([idx[0] as u32, idx[k] as u32, idx[k + 1] as u32]);
            }
        }
    }
    Ok(PlyData { cloud, triangles })
}

/// Checks the header's element counts against the size of the payload before anything is read: the parser
/// would otherwise loop (and allocate) once per declared element, so a 1 KB file that declares 10^12 vertices
/// with no properties ran out of memory. An element needs at least one line (ascii) or the bytes of its scalars
/// and list lengths (binary, at least one byte counted per element).
fn check_counts(header: &ply_rs_bw::ply::Header, bytes: &[u8], name: &Path) -> Result<()> {
    let payload = find_payload(bytes).map_or(&[][..], |at| &bytes[at..]);
    let ascii = header.encoding == Encoding::Ascii;
    let available = if ascii { payload.iter().filter(|&&b| b == b'\n').count() + 1 } else { payload.len() };
    let mut needed = 0usize;
    for def in header.elements.values() {
        let size: usize = if ascii {
            1
        } else {
            def.properties
                .values()
                .map(|p| match &p.data_type {
                    PropertyType::Scalar(t) | PropertyType::List(t, _) => scalar_size(t),
                })
                .sum::<usize>()
                .max(1)
        };
        needed = needed.saturating_add(def.count.saturating_mul(size));
        if needed > available {
            let unit = if ascii { "lines" } else { "bytes" };
            return Err(Error::ply(
                name,
                format!(
                    "not a readable PLY file: element '{}' declares {} entries, more than the {available} {unit} after the header can hold \
                     (a wrong count or a truncated file)",
                    def.name, def.count
                ),
            ));
        }
    }
    Ok(())
}

/// Offset of the payload: just after the line `end_header`.
fn find_payload(bytes: &[u8]) -> Option<usize> {
    let at = bytes.windows(10).position(|w| w == b"end_header")?;
    let nl = bytes[at..].iter().position(|&b| b == b'\n')?;
    Some(at + nl + 1)
}

fn scalar_size(t: &ScalarType) -> usize {
    match t {
        ScalarType::Char | ScalarType::UChar => 1,
        ScalarType::Short | ScalarType::UShort => 2,
        ScalarType::Int | ScalarType::UInt | ScalarType::Float => 4,
        ScalarType::Double => 8,
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// The definition of a property when present, or an error if it is present as a list.
fn scalar_def<'a>(name: &Path, def: &'a ElementDef, prop: &str) -> Result<Option<&'a PropertyDef>> {
    match def.properties.get(prop) {
        None => Ok(None),
        Some(d) if matches!(d.data_type, PropertyType::List(..)) => Err(Error::ply(
            name,
            format!("element '{}' property '{prop}' is a list; expected a scalar number", def.name),
        )),
        Some(d) => Ok(Some(d)),
    }
}

/// True when all three properties are present, false when none is, an error when only some are.
fn optional_triplet(name: &Path, def: &ElementDef, props: [&str; 3]) -> Result<bool> {
    let mut present = [false; 3];
    for (k, p) in props.iter().enumerate() {
        present[k] = scalar_def(name, def, p)?.is_some();
    }
    if present.iter().all(|&b| b) {
        return Ok(true);
    }
    if let Some(k) = present.iter().position(|&b| b) {
        let missing: Vec<&str> = props.iter().zip(present).filter(|(_, b)| !b).map(|(p, _)| *p).collect();
        return Err(Error::ply(
            name,
            format!("element 'vertex' has property '{}' but not {}", props[k], missing.join(", ")),
        ));
    }
    Ok(false)
}

fn scalar_f64(p: &Property) -> Option<f64> {
    Some(match *p {
        Property::Char(v) => v as f64,
        Property::UChar(v) => v as f64,
        Property::Short(v) => v as f64,
        Property::UShort(v) => v as f64,
        Property::Int(v) => v as f64,
        Property::UInt(v) => v as f64,
        Property::Float(v) => v as f64,
        Property::Double(v) => v,
        _ => return None,
    })
}

fn list_indices(p: &Property) -> Option<Vec<i64>> {
    Some(match p {
        Property::ListChar(v) => v.iter().map(|&x| x as i64).collect(),
        Property::ListUChar(v) => v.iter().map(|&x| x as i64).collect(),
        Property::ListShort(v) => v.iter().map(|&x| x as i64).collect(),
        Property::ListUShort(v) => v.iter().map(|&x| x as i64).collect(),
        Property::ListInt(v) => v.iter().map(|&x| x as i64).collect(),
        Property::ListUInt(v) => v.iter().map(|&x| x as i64).collect(),
        _ => return None,
    })
}

/// Writes a cloud (and optional triangles) as PLY, atomically: a temporary file next to `path` renamed onto it.
pub fn write_ply(path: &Path, cloud: &PointCloud, triangles: &[[u32; 3]], encoding: PlyEncoding) -> Result<()> {
    write_ply_new(path, cloud, triangles, encoding, true)
}

/// [`write_ply`] that keeps an existing file unless `force` (also one another process created meanwhile) and
/// never replaces an input of this run (core's output rule).
pub fn write_ply_new(
    path: &Path,
    cloud: &PointCloud,
    triangles: &[[u32; 3]],
    encoding: PlyEncoding,
    force: bool,
) -> Result<()> {
    let mut ply = Ply::<DefaultElement>::new();
    ply.header.encoding = match encoding {
        PlyEncoding::Ascii => Encoding::Ascii,
        PlyEncoding::BinaryLittleEndian => Encoding::BinaryLittleEndian,
    };
    ply.header.comments.push("written by diffuse-pose".into());
    let mut vdef = ElementDef::new("vertex".into());
    let scalar = |n: &str, t: ScalarType| PropertyDef::new(n.into(), PropertyType::Scalar(t));
    for p in ["x", "y", "z"] {
        vdef.properties.add(scalar(p, ScalarType::Float));
    }
    if cloud.normals.is_some() {
        for p in ["nx", "ny", "nz"] {
            vdef.properties.add(scalar(p, ScalarType::Float));
        }
    }
    if cloud.colors.is_some() {
        for p in ["red", "green", "blue"] {
            vdef.properties.add(scalar(p, ScalarType::UChar));
        }
    }
    ply.header.elements.add(vdef);
    let mut vertices = Vec::with_capacity(cloud.len());
    for (i, p) in cloud.points.iter().enumerate() {
        let mut e = DefaultElement::new();
        e.insert("x".into(), Property::Float(p.x as f32));
        e.insert("y".into(), Property::Float(p.y as f32));
        e.insert("z".into(), Property::Float(p.z as f32));
        if let Some(ns) = &cloud.normals {
            e.insert("nx".into(), Property::Float(ns[i].x as f32));
            e.insert("ny".into(), Property::Float(ns[i].y as f32));
            e.insert("nz".into(), Property::Float(ns[i].z as f32));
        }
        if let Some(cs) = &cloud.colors {
            e.insert("red".into(), Property::UChar(cs[i][0]));
            e.insert("green".into(), Property::UChar(cs[i][1]));
            e.insert("blue".into(), Property::UChar(cs[i][2]));
        }
        vertices.push(e);
    }
    ply.payload.insert("vertex".into(), vertices);
    if !triangles.is_empty() {
        let mut fdef = ElementDef::new("face".into());
        fdef.properties
            .add(PropertyDef::new("vertex_indices".into(), PropertyType::List(ScalarType::UChar, ScalarType::Int)));
        ply.header.elements.add(fdef);
        let faces = triangles
            .iter()
            .map(|t| {
                let mut e = DefaultElement::new();
                e.insert("vertex_indices".into(), Property::ListInt(t.iter().map(|&k| k as i32).collect()));
                e
            })
            .collect();
        ply.payload.insert("face".into(), faces);
    }
    write_output(path, force, |out| Writer::new().write_ply(out, &mut ply).map(|_| ()).map_err(std::io::Error::other))
}

/// Writes through `f` into a temporary file beside `path`, then renames it onto `path`.
pub fn write_atomically(
    path: &Path,
    f: impl FnOnce(&mut BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    write_output(path, true, f)
}

/// Core's atomic output rule ([`diffuse_core::io::write_atomic`]) with a buffered writer.
fn write_output(
    path: &Path,
    force: bool,
    f: impl FnOnce(&mut BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    diffuse_core::io::write_atomic(path, force, |file| {
        let mut out = BufWriter::new(file);
        f(&mut out)?;
        out.flush()
    })
    .map_err(file_error)
}

/// Core's file errors as this crate's, keeping the file's name.
fn file_error(e: diffuse_core::Error) -> Error {
    match e {
        diffuse_core::Error::File { path, reason } => Error::ply(path, reason),
        other => Error::Core(other),
    }
}

/// Largest PLY file read (about 40 million points in binary form).
pub const MAX_PLY_BYTES: u64 = 1 << 30;

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn sample() -> PointCloud {
        PointCloud {
            points: vec![Point3::new(0.5, -1.25, 2.0), Point3::new(1.0, 0.0, 0.0), Point3::new(0.0, 1.0, 0.25)],
            normals: Some(vec![Vector3::z(), Vector3::x(), Vector3::y()]),
            colors: Some(vec![[255, 0, 0], [0, 128, 0], [1, 2, 3]]),
        }
    }

    #[test]
    fn round_trips_in_both_encodings() {
        let dir = tempfile::tempdir().unwrap();
        for enc in [PlyEncoding::Ascii, PlyEncoding::BinaryLittleEndian] {
            let path = dir.path().join(format!("c-{enc:?}.ply"));
            write_ply(&path, &sample(), &[[0, 1, 2]], enc).unwrap();
            let back = read_ply(&path).unwrap();
            assert_eq!(back.triangles, vec![[0, 1, 2]]);
            assert_eq!(back.cloud.colors, sample().colors);
            for (a, b) in back.cloud.points.iter().zip(&sample().points) {
                assert_relative_eq!(a, b, epsilon = 1e-6);
            }
            assert_eq!(back.cloud.normals.unwrap()[1], Vector3::x());
            // No temporary file is left behind.
            assert_eq!(
                std::fs::read_dir(dir.path())
                    .unwrap()
                    .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
                    .count(),
                0
            );
        }
    }

    #[test]
    fn reads_double_and_integer_coordinates_float_colours_and_quads() {
        let text = "ply\nformat ascii 1.0\nelement vertex 4\nproperty double x\nproperty int y\nproperty float z\n\
                    property float red\nproperty float green\nproperty float blue\n\
                    element face 1\nproperty list uchar uint vertex_index\nend_header\n\
                    0.5 1 2 1 0 0.5\n1 0 0 0 0 0\n1 1 0 0 0 0\n0 1 0 0 0 0\n4 0 1 2 3\n";
        let d = read_ply_bytes(text.as_bytes(), Path::new("q.ply")).unwrap();
        assert_eq!(d.cloud.points[0], Point3::new(0.5, 1.0, 2.0));
        assert_eq!(d.cloud.colors.as_ref().unwrap()[0], [255, 0, 128]);
        assert_eq!(d.triangles, vec![[0, 1, 2], [0, 2, 3]]);
        assert!(d.cloud.normals.is_none());
    }

    #[test]
    fn reads_the_shipped_bunny() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bunny.ply");
        let d = read_ply(&path).unwrap();
        assert_eq!(d.cloud.len(), 1839);
        assert_eq!(d.triangles.len(), 3674);
    }

    fn err(text: &str) -> String {
        read_ply_bytes(text.as_bytes(), Path::new("bad.ply")).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_name_the_file_element_and_property() {
        let e = err("not a ply\n");
        assert!(e.starts_with("bad.ply: not a readable PLY file"), "{e}");
        let e = err("ply\nformat ascii 1.0\nelement point 1\nproperty float x\nend_header\n1\n");
        assert!(e.contains("no element 'vertex'") && e.contains("point"), "{e}");
        let e = err("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float z\nend_header\n1 2\n");
        assert!(e.contains("element 'vertex' has no property 'y'"), "{e}");
        let e = err(
            "ply\nformat ascii 1.0\nelement vertex 1\nproperty list uchar float x\nproperty float y\nproperty float z\nend_header\n1 1 2 3\n",
        );
        assert!(e.contains("property 'x' is a list"), "{e}");
        let e = err(
            "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nproperty float nx\nend_header\n1 2 3 4\n",
        );
        assert!(e.contains("'nx' but not ny, nz"), "{e}");
        let e = err(
            "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n1 2 3\n3 0 1 7\n",
        );
        assert!(e.contains("element 'face' 0: vertex index 1 out of range (0..1)"), "{e}");
        // Truncated payload.
        let e = err(
            "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\nend_header\n1 2 3\n",
        );
        assert!(e.starts_with("bad.ply: not a readable PLY file"), "{e}");
        let mut bin = b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n".to_vec();
        bin.extend_from_slice(&[0u8; 14]);
        let e = read_ply_bytes(&bin, Path::new("bad.ply")).unwrap_err().to_string();
        assert!(e.starts_with("bad.ply: not a readable PLY file"), "{e}");
    }

    #[test]
    fn non_finite_values_are_read_and_then_rejected_by_validation() {
        let text = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\nnan 1 0\n1 1 1\n";
        match read_ply_bytes(text.as_bytes(), Path::new("n.ply")) {
            Ok(d) => assert!(d.cloud.validate("n.ply", 1).unwrap_err().to_string().contains("point 1")),
            Err(e) => assert!(e.to_string().starts_with("n.ply:"), "{e}"),
        }
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let e = read_ply(Path::new("/nonexistent/x.ply")).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/x.ply:"), "{e}");
    }
}
