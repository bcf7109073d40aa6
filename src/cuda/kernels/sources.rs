//! The embedded CUDA C sources (`kernels/*.cu` and the headers they
//! include) and the expansion of their `#include "x"` lines, with `#line`
//! markers, since NVRTC sees no files.

use crate::{Error, Result};

/// One embedded source file.
#[derive(Clone, Copy, Debug)]
pub struct SourceFile {
    /// File name under `kernels/`.
    pub name: &'static str,
    /// Its text.
    pub text: &'static str,
}

/// Every file under `kernels/` that kernels are built from.
pub const SOURCES: &[SourceFile] = &[
    SourceFile {
        name: "philox.cuh",
        text: include_str!("../../../kernels/philox.cuh"),
    },
    SourceFile {
        name: "sample.cuh",
        text: include_str!("../../../kernels/sample.cuh"),
    },
    SourceFile {
        name: "augment.cu",
        text: include_str!("../../../kernels/augment.cu"),
    },
    SourceFile {
        name: "relaxed.cu",
        text: include_str!("../../../kernels/relaxed.cu"),
    },
    SourceFile {
        name: "philox.cu",
        text: include_str!("../../../kernels/philox.cu"),
    },
];

pub(super) fn source_text(name: &str) -> Result<&'static str> {
    SOURCES
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.text)
        .ok_or_else(|| Error::Cuda(format!("kernel source {name} is not embedded")))
}

/// The text of `kernels/<file>` with its `#include "x"` lines replaced by the
/// embedded files (recursively, each at most once, as `#pragma once` would).
pub fn expanded_source(file: &str) -> Result<String> {
    let mut out = String::new();
    let mut seen = Vec::new();
    expand_into(file, &mut out, &mut seen, 0)?;
    Ok(out)
}

fn expand_into(file: &str, out: &mut String, seen: &mut Vec<String>, depth: usize) -> Result<()> {
    if depth > 8 {
        return Err(Error::Cuda(format!("{file}: includes nested too deep")));
    }
    seen.push(file.to_string());
    out.push_str(&format!("#line 1 \"{file}\"\n"));
    for (n, line) in source_text(file)?.lines().enumerate() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("#include") {
            let inc = rest.trim();
            let Some(name) = inc.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
                return Err(Error::Cuda(format!(
                    "{file}:{}: only #include \"...\" of embedded files is supported (NVRTC has \
                     no CUDA headers here): {t}",
                    n + 1
                )));
            };
            if !seen.iter().any(|s| s == name) {
                expand_into(name, out, seen, depth + 1)?;
            }
            out.push_str(&format!("#line {} \"{file}\"\n", n + 2));
        } else if t == "#pragma once" {
            out.push('\n');
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8_unit_matches_division() {
        // sample.cuh: metaug_u8_unit relies on this being exact for all 256 inputs.
        let r = 1.0f32 / 255.0;
        for p in 0..=255u32 {
            let x = p as f32;
            let q0 = x * r;
            let q = (-q0).mul_add(255.0, x).mul_add(r, q0);
            assert_eq!(q.to_bits(), (x / 255.0).to_bits(), "p = {p}");
        }
    }

    #[test]
    fn includes_expand_once_with_line_markers() {
        let src = expanded_source("augment.cu").unwrap();
        assert!(!src.contains("#include"));
        assert!(!src.contains("#pragma once"));
        assert_eq!(src.matches("struct Philox4 {").count(), 1);
        assert!(src.contains("#line 1 \"philox.cuh\""));
        assert!(src.contains("#line 1 \"sample.cuh\""));
        let relaxed = expanded_source("relaxed.cu").unwrap();
        assert_eq!(relaxed.matches("struct Footprint {").count(), 1);
        assert!(expanded_source("nope.cu").is_err());
    }
}
