//! The policy file: a small safetensors file, tensor `phi` F32 `[7]` and
//! metadata `format=metaug-policy`, `ops=crop,rotate,flip,noise`, `tau=...`
//! and either `version=1` (the independent family, as every file written
//! before families existed) or `version=2` with `family=independent|one-op`.
//! Files of the independent family are still written as version 1.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::{Family, Policy, N_PHI, OPS};
use crate::{Error, Result};

const FORMAT: &str = "metaug-policy";
/// The version of files without a family (independent ops).
const VERSION_INDEPENDENT: &str = "1";
/// The version of files that name their family.
const VERSION_FAMILY: &str = "2";
/// A policy file is a few hundred bytes; anything above this is not one.
const MAX_FILE_BYTES: u64 = 1 << 20;

impl Policy {
    /// The policy file's bytes (safetensors).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let data: Vec<u8> = self.phi.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![N_PHI], &data)
            .map_err(|e| Error::invalid("policy", e.to_string()))?;
        let mut meta: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("version", VERSION_INDEPENDENT.to_string()),
            ("ops", OPS.to_string()),
            ("tau", self.tau.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // independent policies keep version 1's exact bytes; a one-op file
        // is version 2, which readers from before the family refuse instead
        // of sampling it as independent ops
        if self.family != Family::Independent {
            meta.insert("version".into(), VERSION_FAMILY.into());
            meta.insert("family".into(), self.family.name().into());
        }
        safetensors::serialize([("phi", view)], Some(meta))
            .map_err(|e| Error::invalid("policy", e.to_string()))
    }

    /// Parses a policy file's bytes; `path` names the file in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |what: String| Error::format(path, what);
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let empty = HashMap::new();
        let meta = meta.metadata().as_ref().unwrap_or(&empty);
        match meta.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            Some("metaug-shard") => {
                return Err(bad("this is a metaug shard, not a policy file".to_string()))
            }
            Some(other) => {
                return Err(bad(format!(
                    "format is {other:?}, not a metaug policy file ({FORMAT:?})"
                )))
            }
            None => {
                return Err(bad(
                    "no `format` metadata: not a metaug policy file".to_string()
                ))
            }
        }
        let family = match (
            meta.get("version").map(String::as_str),
            meta.get("family").map(String::as_str),
        ) {
            (Some(VERSION_INDEPENDENT), None) => Family::Independent,
            (Some(VERSION_INDEPENDENT), Some(f)) => {
                return Err(bad(format!(
                    "version 1 policy with a `family` ({f:?}): families need version 2"
                )))
            }
            (Some(VERSION_FAMILY), Some(f)) => Family::parse(f).ok_or_else(|| {
                bad(format!(
                    "policy family {f:?} is not supported (expected independent or one-op)"
                ))
            })?,
            (Some(VERSION_FAMILY), None) => {
                return Err(bad("version 2 policy without `family` metadata".to_string()))
            }
            (v, _) => {
                return Err(bad(format!(
                    "policy version {v:?} is not supported (expected 1 or 2)"
                )))
            }
        };
        if meta.get("ops").map(String::as_str) != Some(OPS) {
            return Err(bad(format!(
                "policy ops {:?} (expected {OPS:?})",
                meta.get("ops")
            )));
        }
        let tau: f32 = meta
            .get("tau")
            .ok_or_else(|| bad("no `tau` metadata".to_string()))?
            .parse()
            .map_err(|_| bad(format!("tau {:?} is not a number", meta["tau"])))?;
        let names = st.names();
        if names != ["phi"] {
            return Err(bad(format!(
                "expected exactly one tensor `phi`, found {names:?}"
            )));
        }
        let t = st
            .tensor("phi")
            .map_err(|e| bad(format!("tensor phi: {e}")))?;
        if t.dtype() != Dtype::F32 || t.shape() != [N_PHI] {
            return Err(bad(format!(
                "tensor phi is {:?} {:?} (expected F32 [{N_PHI}])",
                t.dtype(),
                t.shape()
            )));
        }
        let mut phi = [0.0f32; N_PHI];
        for (v, b) in phi.iter_mut().zip(t.data().chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let policy = Policy { phi, tau, family };
        policy.validate().map_err(|e| bad(e.to_string()))?;
        Ok(policy)
    }

    /// Reads and validates a policy file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len > MAX_FILE_BYTES {
            return Err(Error::format(
                path,
                format!("{len} bytes is too large for a policy file"),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Policy::from_bytes(&bytes, path)
    }

    /// Writes the policy file: to a temporary name beside it, synced, then
    /// renamed, so that a reader never sees half a file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        use std::io::Write;
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        };
        write().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }
}
