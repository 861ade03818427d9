//! Fuzzing the PLY reader (`ply::read_ply_bytes`, then `PlyData::model_cloud` as `diffuse pose estimate` does)
//! with property tests: arbitrary bytes, the repository's example PLY files (binary, and ascii copies) with random
//! edits, and headers with boundary element counts and every property type. Every case must return `Ok` with
//! in-range triangles or an error naming the file, within 2 s and 256 MiB (support/fuzz_harness.rs).

#[path = "../../support/fuzz_harness.rs"]
mod harness;

use std::path::Path;

use diffuse_pose::ply::{PlyEncoding, read_ply, read_ply_bytes, write_ply};
use harness::{arbitrary_bytes, isolated, mutated, repo_file, run_cases};
use proptest::prelude::*;

const NAME: &str = "fuzz-case.ply";

/// The small example files, and ascii copies of two of them (the ascii parser is a different code path).
fn seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let mut seeds = Vec::new();
    for f in ["examples/pose/box.ply", "examples/pose/l-shape.ply", "examples/pose/cylinder.ply"] {
        let bytes = repo_file(f);
        let data = read_ply_bytes(&bytes, Path::new(f)).unwrap();
        let ascii = dir.path().join("ascii.ply");
        write_ply(&ascii, &data.cloud, &data.triangles, PlyEncoding::Ascii).unwrap();
        seeds.push(std::fs::read(&ascii).unwrap());
        seeds.push(bytes);
    }
    seeds
}

fn check(bytes: &[u8]) -> Result<(), String> {
    match read_ply_bytes(bytes, Path::new(NAME)) {
        Ok(data) => {
            let n = data.cloud.points.len();
            if let Some(t) = data.triangles.iter().find(|t| t.iter().any(|&k| k as usize >= n)) {
                return Err(format!("triangle {t:?} indexes past {n} vertices"));
            }
            if data.cloud.normals.as_ref().is_some_and(|v| v.len() != n)
                || data.cloud.colors.as_ref().is_some_and(|v| v.len() != n)
            {
                return Err("normals or colours do not match the vertices".into());
            }
            match data.model_cloud(NAME, 500, 0) {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains(NAME) => Ok(()),
                Err(e) => Err(format!("model_cloud error does not name the file: {e}")),
            }
        }
        Err(e) if e.to_string().contains(NAME) => Ok(()),
        Err(e) => Err(format!("error does not name the file: {e}")),
    }
}

/// A header with boundary counts and random property types, then a body of random bytes or numbers.
fn header_case() -> impl Strategy<Value = Vec<u8>> {
    let format = prop_oneof![Just("ascii"), Just("binary_little_endian"), Just("binary_big_endian")];
    let count = prop_oneof![
        Just(0u64),
        Just(1),
        Just(3),
        Just(1_000_000_000_000),
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        Just(1 << 40),
        0u64..100,
    ];
    let scalar = prop_oneof![
        Just("char"),
        Just("uchar"),
        Just("short"),
        Just("ushort"),
        Just("int"),
        Just("uint"),
        Just("float"),
        Just("double"),
        Just("int8"),
        Just("float64"),
        Just("bogus"),
    ];
    let property = prop_oneof![
        3 => scalar.clone().prop_map(|t| t.to_string()),
        1 => (scalar.clone(), scalar).prop_map(|(a, b)| format!("list {a} {b}")),
    ];
    let names = prop_oneof![
        Just("x"),
        Just("y"),
        Just("z"),
        Just("nx"),
        Just("ny"),
        Just("nz"),
        Just("red"),
        Just("green"),
        Just("blue"),
        Just("vertex_indices")
    ];
    let props = proptest::collection::vec((property, names), 0..8);
    let body = prop_oneof![
        arbitrary_bytes(400),
        proptest::collection::vec(
            prop_oneof![
                Just("1".to_string()),
                Just("-1".to_string()),
                Just("1e308".to_string()),
                Just("4294967295".to_string()),
                Just("nan".to_string()),
                any::<i32>().prop_map(|v| v.to_string()),
                Just("\n".to_string())
            ],
            0..60
        )
        .prop_map(|v| v.join(" ").into_bytes()),
    ];
    (
        format,
        count.clone(),
        props,
        count,
        proptest::collection::vec(
            (
                prop_oneof![Just("uchar"), Just("int"), Just("uint"), Just("float")],
                prop_oneof![Just("uchar"), Just("int"), Just("uint")],
            ),
            0..2,
        ),
        body,
    )
        .prop_map(|(format, nv, props, nf, face, body)| {
            let mut h = format!("ply\nformat {format} 1.0\nelement vertex {nv}\n");
            for (ty, name) in &props {
                h += &format!("property {ty} {name}\n");
            }
            if let Some((len, idx)) = face.first() {
                h += &format!("element face {nf}\nproperty list {len} {idx} vertex_indices\n");
            }
            h += "end_header\n";
            [h.as_bytes(), &body].concat()
        })
}

#[test]
fn ply_arbitrary_bytes() {
    isolated("ply_arbitrary_bytes", || {
        run_cases("ply_arbitrary_bytes", 300, arbitrary_bytes(512), |b| check(&b));
        let after_magic = arbitrary_bytes(512).prop_map(|b| [b"ply\nformat ascii 1.0\n".as_slice(), &b].concat());
        run_cases("ply_arbitrary_after_magic", 300, after_magic, |b| check(&b));
    });
}

#[test]
fn ply_mutated_seeds() {
    isolated("ply_mutated_seeds", || {
        run_cases("ply_mutated_seeds", 300, mutated(seeds()), |b| check(&b));
    });
}

#[test]
fn ply_header_fields() {
    isolated("ply_header_fields", || {
        run_cases("ply_header_fields", 600, header_case(), |b| check(&b));
    });
}

/// `read_ply` (from a path) gives the same answer as `read_ply_bytes`, and a missing file is a named error.
#[test]
fn ply_read_from_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    for seed in seeds() {
        std::fs::write(&path, &seed).unwrap();
        assert_eq!(read_ply(&path).unwrap(), read_ply_bytes(&seed, &path).unwrap());
    }
    let e = read_ply(&dir.path().join("missing.ply")).unwrap_err().to_string();
    assert!(e.contains("missing.ply"), "{e}");
}

/// Found by `ply_header_fields`: a header declaring 10^12 vertices with no properties (so each takes no bytes)
/// made the parser loop and allocate per declared element until memory ran out; counts are now checked against
/// the payload's size first, naming the element.
#[test]
fn ply_counts_larger_than_the_payload_are_errors() {
    isolated("ply_counts_larger_than_the_payload_are_errors", || {
        for format in ["ascii", "binary_little_endian", "binary_big_endian"] {
            for props in ["", "property float x\nproperty float y\nproperty float z\n"] {
                let text =
                    format!("ply\nformat {format} 1.0\nelement vertex 1000000000000\n{props}end_header\n1 2 3\n");
                let e = read_ply_bytes(text.as_bytes(), Path::new("huge.ply")).unwrap_err().to_string();
                assert!(e.contains("huge.ply") && e.contains("'vertex' declares 1000000000000 entries"), "{e}");
            }
        }
    });
}
