//! Generating text with a diffusion model: templates with blanks to fill (infilling), any sampler of the crate,
//! and the bytes turned back into text.
//!
//! Template syntax: literal text with blanks `[MASK]` (one byte) or `[MASK:n]` (n bytes); `[[` stands for a
//! literal `[`. `--prefix P --length N --suffix S` is the template `P[MASK:N]S`.

use diffuse_core::SampleSeeds;
use tch::Device;

use crate::sampler::{SamplerConfig, sample_template};
use crate::text::model::{ModelKind, TextModel};
use crate::{Error, Result};

/// Parses a template into fixed bytes and blanks (`None`).
pub fn parse_template(template: &str) -> Result<Vec<Option<i64>>> {
    let bytes = template.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"[[") {
            out.push(Some(b'[' as i64));
            i += 2;
        } else if bytes[i..].starts_with(b"[MASK") {
            let close = bytes[i..]
                .iter()
                .position(|&b| b == b']')
                .ok_or_else(|| Error::invalid("template", format!("unclosed [MASK at byte {i}")))?;
            let inner = &template[i + 5..i + close];
            let n = match inner.strip_prefix(':') {
                None if inner.is_empty() => 1,
                Some(n) => n.trim().parse::<usize>().map_err(|_| {
                    Error::invalid("template", format!("[MASK{inner}]: the count after ':' must be a whole number"))
                })?,
                None => return Err(Error::invalid("template", format!("[MASK{inner}] is not [MASK] or [MASK:n]"))),
            };
            if n > crate::text::net::MAX_CONTEXT {
                return Err(Error::invalid("template", format!("[MASK:{n}] is longer than any context")));
            }
            out.extend(std::iter::repeat_n(None, n));
            i += close + 1;
        } else {
            out.push(Some(bytes[i] as i64));
            i += 1;
        }
    }
    Ok(out)
}

/// The template `prefix[MASK:length]suffix`.
pub fn prefix_suffix(prefix: &str, length: usize, suffix: &str) -> Vec<Option<i64>> {
    let mut t: Vec<Option<i64>> = prefix.bytes().map(|b| Some(b as i64)).collect();
    t.extend(std::iter::repeat_n(None, length));
    t.extend(suffix.bytes().map(|b| Some(b as i64)));
    t
}

/// Draws one sequence per seed from `model` with the blanks of `template` filled by sampler `cfg`; returns the
/// byte strings.
pub fn generate(
    model: &TextModel,
    cfg: &SamplerConfig,
    template: &[Option<i64>],
    seeds: &SampleSeeds,
    device: Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<u8>>> {
    if model.config().kind == ModelKind::Autoregressive {
        return Err(Error::not_applicable("diffusion sampling", "this is the autoregressive baseline model"));
    }
    if template.is_empty() || !template.iter().any(Option::is_none) {
        return Err(Error::invalid("template", "nothing to generate (no blanks; use --length N or [MASK:n])"));
    }
    if template.len() > model.context() {
        return Err(Error::invalid(
            "template",
            format!("{} bytes are longer than the model's context of {}", template.len(), model.context()),
        ));
    }
    let out = sample_template(model, model.schedule(), cfg, template, seeds, device, progress)?;
    Ok(out.tokens.chunks(template.len()).map(|row| row.iter().map(|&t| t.clamp(0, 255) as u8).collect()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_blanks_counts_and_escapes() {
        let t = parse_template("a[MASK]b[MASK:3][[x").unwrap();
        let want = [Some(97), None, Some(98), None, None, None, Some(91), Some(120)];
        assert_eq!(t, want);
        assert_eq!(prefix_suffix("a", 2, "b"), vec![Some(97), None, None, Some(98)]);
        for bad in ["[MASK:x]", "[MASK", "[MASKED]", "[MASK:99999999]"] {
            assert!(parse_template(bad).is_err(), "{bad}");
        }
    }
}
