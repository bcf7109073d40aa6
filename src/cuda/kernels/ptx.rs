//! Reading PTX: the entry points and their parameter lists, and the check
//! of a PTX text against the kernels a module is expected to provide.

use super::{KernelSig, ModuleDef, Param};
use crate::{Error, Result};

/// The entry points of a PTX text and their parameter lists.
pub fn ptx_entries(ptx: &str) -> Vec<KernelSig> {
    let mut out = Vec::new();
    let mut rest = ptx;
    while let Some(at) = rest.find(".entry ") {
        rest = &rest[at + ".entry ".len()..];
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_string();
        let mut params = Vec::new();
        if let Some(open) = rest[name_end..].trim_start().strip_prefix('(') {
            let close = open.find(')').unwrap_or(open.len());
            for p in open[..close].split(',') {
                let p = p.trim();
                if p.is_empty() {
                    continue;
                }
                params.push(parse_param(p));
            }
        }
        out.push(KernelSig { name, params });
    }
    out
}

fn parse_param(p: &str) -> Param {
    // `.param .u64 .ptr .align 1 name`, `.param .u32 name`, `.param .f32 name`,
    // `.param .align 4 .b8 name[32]`
    let words: Vec<&str> = p.split_whitespace().collect();
    if words.contains(&".b8") {
        let n = p
            .rsplit_once('[')
            .and_then(|(_, r)| r.trim_end_matches(']').parse().ok())
            .unwrap_or(0);
        return Param::Bytes(n);
    }
    if words.contains(&".u64") || words.contains(&".b64") || words.contains(&".s64") {
        return Param::Ptr;
    }
    if words.contains(&".u32") || words.contains(&".b32") || words.contains(&".s32") {
        return Param::U32;
    }
    // f32 and anything else: report the raw text as a size we never use.
    Param::Bytes(usize::MAX)
}

/// Checks that `ptx` is PTX and has every kernel of `def` with the parameter
/// list the Rust side pushes.
pub fn check_ptx(ptx: &str, def: &ModuleDef) -> Result<()> {
    if !(ptx.contains(".version") && ptx.contains(".target")) {
        return Err(Error::Cuda(format!("module {}: not PTX", def.key)));
    }
    let entries = ptx_entries(ptx);
    for k in &def.kernels {
        match entries.iter().find(|e| e.name == k.name) {
            None => {
                return Err(Error::Cuda(format!(
                    "module {}: no entry point {} in the PTX",
                    def.key, k.name
                )))
            }
            Some(e) if e.params != k.params => {
                return Err(Error::Cuda(format!(
                    "module {}: kernel {} takes {:?} in the PTX but the host pushes {:?}",
                    def.key, k.name, e.params, k.params
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_parameter_lists_parse() {
        let ptx = "//\n.version 9.0\n.target sm_90\n\
            .visible .entry k1(\n\t.param .u64 .ptr .align 1 k1_param_0,\n\
            \t.param .align 4 .b8 k1_param_1[32],\n\t.param .u32 k1_param_2\n)\n{\n}\n\
            .visible .entry k2()\n{\n}\n";
        let e = ptx_entries(ptx);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "k1");
        assert_eq!(e[0].params, vec![Param::Ptr, Param::Bytes(32), Param::U32]);
        assert_eq!(e[1].params, vec![]);
        let def = ModuleDef {
            key: "t".into(),
            file: "x.cu",
            defines: vec![],
            kernels: vec![KernelSig {
                name: "k1".into(),
                params: vec![Param::Ptr, Param::Bytes(32), Param::U32],
            }],
        };
        assert!(check_ptx(ptx, &def).is_ok());
        let mut bad = def.clone();
        bad.kernels[0].params.pop();
        assert!(check_ptx(ptx, &bad).is_err());
        bad.kernels[0].name = "k3".into();
        assert!(check_ptx(ptx, &bad).is_err());
        assert!(check_ptx("garbage", &def).is_err());
    }
}
