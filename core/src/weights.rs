//! Named float tensors to and from safetensors bytes (so that files are written atomically and embedded models
//! load from memory), through the `safetensors` crate, which checks the header (≤ 100 MB) and every tensor's
//! offsets against the buffer. Shared by the domain crates' models and checkpoints.

use std::collections::HashMap;
use std::path::Path;

use tch::nn::VarStore;

use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// Largest weights or checkpoint file read (1 GiB).
pub const MAX_WEIGHTS_BYTES: u64 = 1 << 30;

/// Serializes named tensors (as float32 on the CPU, sorted by name) with string metadata.
pub fn to_bytes(tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buffers = Vec::with_capacity(sorted.len());
    for (name, t) in sorted {
        let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?;
        let n = t.numel();
        let mut values = vec![0f32; n];
        t.f_copy_data(&mut values, n)?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.clone(), shape, bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::invalid("safetensors", format!("{e:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = (!metadata.is_empty()).then_some(metadata);
    safetensors::tensor::serialize(views, &meta).map_err(|e| Error::invalid("safetensors", format!("{e:?}")))
}

/// The variables of `vs` sorted by name (the order of files and optimiser state).
pub fn named(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Named tensors and string metadata.
pub type Loaded = (Vec<(String, Tensor)>, HashMap<String, String>);

/// Parses safetensors bytes; `name` is the file for errors. Float32 tensors are read as they are; float16 and
/// bfloat16 ones (the shipped models are stored in float16 to halve their size) are widened to float32.
pub fn from_bytes(bytes: &[u8], name: &Path) -> Result<Loaded> {
    let bad = |r: String| Error::file(name, format!("not a valid safetensors file: {r}"));
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("{e:?}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("{e:?}")))?;
    let mut out = Vec::new();
    for (key, view) in st.tensors() {
        let (kind, width) = match view.dtype() {
            Dtype::F32 => (Kind::Float, 4),
            Dtype::F16 => (Kind::Half, 2),
            Dtype::BF16 => (Kind::BFloat16, 2),
            other => {
                return Err(bad(format!("tensor {key} has dtype {other:?}; F32, F16 or BF16 is expected")));
            }
        };
        let data = view.data();
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let numel: i64 = shape.iter().product();
        if numel as usize * width != data.len() {
            return Err(bad(format!("tensor {key}: shape {shape:?} does not match its {} bytes", data.len())));
        }
        // Safetensors data is little-endian, as is every platform libtorch runs on.
        let t = Tensor::f_from_data_size(data, &shape, kind)?.f_to_kind(Kind::Float)?;
        out.push((key, t));
    }
    Ok((out, metadata))
}

/// Reads and parses a safetensors file (bounded by [`MAX_WEIGHTS_BYTES`]).
pub fn read(path: &Path) -> Result<Loaded> {
    let bytes = crate::io::read_input(path, MAX_WEIGHTS_BYTES)?;
    from_bytes(&bytes, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_files() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([2, 3]);
        let b = Tensor::from_slice(&[-0.5f32]);
        let meta = HashMap::from([("step".to_string(), "7".to_string())]);
        let bytes = to_bytes(&[("a".into(), a.shallow_clone()), ("b".into(), b.shallow_clone())], meta).unwrap();
        let (tensors, meta) = from_bytes(&bytes, Path::new("w.safetensors")).unwrap();
        assert_eq!(meta["step"], "7");
        assert_eq!(tensors.len(), 2);
        let got = tensors.iter().find(|(k, _)| k == "a").unwrap();
        assert_eq!(got.1, a);
        // Truncated, empty and garbage buffers are refused with the file's name.
        for bad in [&bytes[..bytes.len() - 3], &bytes[..4], &b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk"[..]] {
            let err = from_bytes(bad, Path::new("w.safetensors")).unwrap_err().to_string();
            assert!(err.contains("w.safetensors") && err.contains("not a valid safetensors"), "{err}");
        }
    }

    #[test]
    fn half_precision_tensors_are_widened_and_other_dtypes_refused() {
        // 1.0, -2.0, 0.5 in IEEE half precision, little-endian.
        let half: Vec<u8> = [0x3c00u16, 0xc000, 0x3800].iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F16, vec![3], &half).unwrap();
        let bytes = safetensors::tensor::serialize([("h".to_string(), view)], &None).unwrap();
        let (tensors, _) = from_bytes(&bytes, Path::new("h.safetensors")).unwrap();
        assert_eq!(tensors[0].1.kind(), Kind::Float);
        assert_eq!(tensors[0].1, Tensor::from_slice(&[1.0f32, -2.0, 0.5]));
        let ints = [0u8; 8];
        let view = TensorView::new(Dtype::I64, vec![1], &ints).unwrap();
        let bytes = safetensors::tensor::serialize([("i".to_string(), view)], &None).unwrap();
        let err = from_bytes(&bytes, Path::new("i.safetensors")).unwrap_err().to_string();
        assert!(err.contains("i.safetensors") && err.contains("I64"), "{err}");
    }
}
