//! safetensors files of float32 tensors, to and from memory (so that outputs are written atomically and the
//! default model can be read from bytes embedded in the binary). The format: an 8-byte little-endian header
//! length, a JSON header `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {…}}`, then
//! the raw little-endian data.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// Serializes named float tensors (converted to float32 on the CPU) with string metadata.
pub fn to_bytes(tensors: &[(String, Tensor)], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut data: Vec<u8> = Vec::new();
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in sorted {
        let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?;
        let n = t.numel();
        let mut values = vec![0f32; n];
        t.f_copy_data(&mut values, n)?;
        let begin = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(name.clone(), json!({"dtype": "F32", "shape": t.size(), "data_offsets": [begin, data.len()]}));
    }
    let mut head =
        serde_json::to_vec(&Value::Object(header)).map_err(|e| Error::invalid("safetensors", e.to_string()))?;
    // The data should start 8-byte aligned.
    while (head.len() + 8) % 8 != 0 {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + data.len());
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Named tensors and the string metadata of a safetensors file.
pub type Loaded = (Vec<(String, Tensor)>, BTreeMap<String, String>);

/// The string metadata (`__metadata__`) of a parsed safetensors header.
fn metadata_of(header: &serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    header
        .get("__metadata__")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// The string metadata of a safetensors file, reading only its header (a checkpoint's tensors can be large).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let bad = |r: String| Error::model(path, format!("not a valid safetensors file: {r}"));
    let mut f = diffuse_core::io::open_input(path).map_err(|e| Error::model(path, e.to_string()))?;
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad(format!("the file is {file_len} bytes, shorter than the 8-byte header length")))?;
    let n = header_len(u64::from_le_bytes(len), file_len.saturating_sub(8)).map_err(bad)?;
    let mut head = vec![0u8; n];
    f.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&head).map_err(|e| bad(format!("header: {e}")))?;
    Ok(metadata_of(&header))
}

/// Largest safetensors JSON header read (the format's own limit).
pub const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Checks a header length against the bytes that follow it and [`MAX_HEADER_BYTES`].
fn header_len(declared: u64, available: u64) -> std::result::Result<usize, String> {
    if declared > MAX_HEADER_BYTES {
        return Err(format!("the header length field says {declared} bytes, over the limit of {MAX_HEADER_BYTES}"));
    }
    if declared > available {
        return Err(format!(
            "the header length field says {declared} bytes but only {available} follow it (truncated file?)"
        ));
    }
    Ok(declared as usize)
}

/// The tensors and metadata of a safetensors buffer; `name` is the file for errors. Only F32 is accepted.
pub fn from_bytes(bytes: &[u8], name: &Path) -> Result<Loaded> {
    let bad = |r: String| Error::model(name, format!("not a valid safetensors file: {r}"));
    if bytes.len() < 8 {
        return Err(bad(format!("the file is {} bytes, shorter than the 8-byte header length", bytes.len())));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[..8]);
    let n = header_len(u64::from_le_bytes(len), (bytes.len() - 8) as u64).map_err(bad)?;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(format!("header: {e}")))?;
    let data = &bytes[8 + n..];
    let metadata = metadata_of(&header);
    let mut tensors = Vec::new();
    for (key, v) in header {
        if key == "__metadata__" {
            continue;
        }
        let dtype = v["dtype"].as_str().unwrap_or_default();
        if dtype != "F32" {
            return Err(bad(format!("tensor {key} has dtype {dtype}; float32 (F32) is expected")));
        }
        let shape: Vec<i64> = v["shape"]
            .as_array()
            .ok_or_else(|| bad(format!("tensor {key}: no shape")))?
            .iter()
            .map(|d| d.as_i64().filter(|&d| d >= 0).ok_or_else(|| bad(format!("tensor {key}: bad shape"))))
            .collect::<Result<_>>()?;
        let off: Vec<usize> = v["data_offsets"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_u64().map(|x| x as usize)).collect())
            .unwrap_or_default();
        // The product of the nonzero dimensions must fit too: libtorch computes strides from them even when
        // another dimension is 0.
        let Some(span) = shape.iter().try_fold(4i64, |n, &d| n.checked_mul(d.max(1))) else {
            return Err(bad(format!("tensor {key}: shape {shape:?} has more elements than any file can hold")));
        };
        let bytes = if shape.contains(&0) { 0 } else { span };
        if off.len() != 2 || off[0] > off[1] || off[1] > data.len() || (off[1] - off[0]) as i64 != bytes {
            return Err(bad(format!("tensor {key}: data offsets {off:?} do not fit shape {shape:?}")));
        }
        let t = Tensor::f_from_data_size(&data[off[0]..off[1]], &shape, Kind::Float).map_err(|e| {
            bad(format!("tensor {key} of shape {shape:?}: {}", e.to_string().lines().next().unwrap_or("")))
        })?;
        tensors.push((key, t));
    }
    Ok((tensors, metadata))
}

/// Writes `bytes` to `path` atomically (temporary file + rename, replacing an existing file): a failed write
/// (disk full) leaves the previous file intact.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file_with(path, |f| std::io::Write::write_all(f, bytes))
}

/// [`write_file`] with the writing done by `write` (tests inject failures here).
pub fn write_file_with(path: &Path, write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> Result<()> {
    write_file_forced(path, true, write)
}

/// [`write_file_with`] that keeps an existing file unless `force` (core's output rule: inputs are never
/// replaced, and a file created meanwhile by another process is kept).
pub fn write_file_forced(
    path: &Path,
    force: bool,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    diffuse_core::io::write_atomic(path, force, write).map_err(|e| match e {
        diffuse_core::Error::File { path, reason, .. } => Error::bad_file(path, reason),
        other => Error::Core(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_buffers() {
        let a = Tensor::from_slice(&[1.0f32, -2.5, 3.25, 0.0, 7.0, 8.0]).view([2, 3]);
        let b = Tensor::from_slice(&[0.5f64]).view([1]);
        let meta = BTreeMap::from([("step".to_string(), "12".to_string())]);
        let bytes = to_bytes(&[("w.a".into(), a.shallow_clone()), ("b".into(), b)], &meta).unwrap();
        assert_eq!(&bytes[8..9], b"{");
        let (back, m) = from_bytes(&bytes, Path::new("x.safetensors")).unwrap();
        assert_eq!(m, meta);
        let map: BTreeMap<_, _> = back.into_iter().collect();
        assert_eq!(map["w.a"].size(), [2, 3]);
        assert!(map["w.a"].equal(&a));
        assert_eq!(f64::try_from(&map["b"].get(0)).unwrap(), 0.5);
        let err = from_bytes(&bytes[..bytes.len() - 4], Path::new("x.safetensors")).unwrap_err().to_string();
        assert!(err.contains("x.safetensors") && err.contains("do not fit"), "{err}");
        assert!(from_bytes(b"abc", Path::new("y")).is_err());
        // Issue 23: a truncated header said only "header length".
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &bytes[..20]).unwrap();
        let err = read_metadata(&cut).unwrap_err().to_string();
        assert!(err.contains("cut.safetensors") && err.contains("only 12 follow it"), "{err}");
        let err = from_bytes(&bytes[..20], Path::new("c")).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        std::fs::write(&cut, &bytes[..5]).unwrap();
        assert!(read_metadata(&cut).unwrap_err().to_string().contains("shorter than the 8-byte"));
    }

    #[test]
    fn a_failed_write_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("checkpoint.safetensors");
        write_file(&p, b"previous checkpoint").unwrap();
        // Disk full half-way through the new checkpoint.
        let err = write_file_with(&p, |f| {
            std::io::Write::write_all(f, b"half of the new")?;
            Err(std::io::Error::from_raw_os_error(28))
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("checkpoint.safetensors") && err.contains("No space left"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"previous checkpoint");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temporary file left behind");
    }
}
