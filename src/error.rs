//! The crate's error type: every failure names what went wrong and where
//! (file, shard, record, field), so that a user can act on it.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in metaug.
///
/// Variants are grouped by concern; each `Display` names the file and, where
/// it applies, the record and field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A shard or dataset file is malformed. `what` says which check failed.
    #[error("{path}: {what}")]
    Format {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },

    /// One record of a shard is bad (checksum, decode, declared shape).
    #[error("{path}: record {record}: {what}")]
    Record {
        /// The shard file.
        path: PathBuf,
        /// Index of the record inside that shard.
        record: u64,
        /// What is wrong with it.
        what: String,
    },

    /// An image could not be decoded.
    #[error("decode: {0}")]
    Decode(String),

    /// A caller-supplied value (option, argument, policy) is invalid.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The option or value at fault.
        what: String,
        /// Why it was rejected.
        why: String,
    },

    /// CUDA is not available on this machine, or a CUDA call failed.
    #[error("cuda: {0}")]
    Cuda(String),

    /// A pipeline stage stopped (a worker panicked or the loader was shut down).
    #[error("pipeline: {0}")]
    Pipeline(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A format error on `path`.
    pub fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            what: what.into(),
        }
    }

    /// An error in record `record` of the shard at `path`.
    pub fn record(path: impl Into<PathBuf>, record: u64, what: impl Into<String>) -> Self {
        Error::Record {
            path: path.into(),
            record,
            what: what.into(),
        }
    }

    /// An invalid caller-supplied value.
    pub fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            why: why.into(),
        }
    }
}
