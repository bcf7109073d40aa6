//! The validation of a shard's record tables at open: offsets and shapes.

use super::{read_shape, Shard};
use crate::shard::format::Encoding;
use crate::shard::header::le_u64;
use crate::{Error, Result};

impl Shard {
    /// Checks offsets (start at 0, never decrease, end at the payload total)
    /// and shapes (no zero dimension; raw records hold exactly h*w*c bytes).
    pub(super) fn check_records(&self) -> Result<()> {
        let total = self.layout.bytes.len() as u64;
        let offsets = self.offsets();
        let shapes = self.shapes();
        let n = self.layout.count as usize;
        let first = le_u64(offsets, 0).unwrap_or(0);
        if first != 0 {
            return Err(Error::format(
                &self.path,
                format!("offsets start at {first}, expected 0"),
            ));
        }
        let mut prev = 0u64;
        for i in 0..n {
            let end = le_u64(offsets, i + 1).unwrap_or(u64::MAX);
            let rec = i as u64;
            if end < prev {
                return Err(Error::record(
                    &self.path,
                    rec,
                    format!("offsets decrease: record ends at {end}, before its start {prev}"),
                ));
            }
            if end > total {
                return Err(Error::record(
                    &self.path,
                    rec,
                    format!("offset {end} is out of range: the shard holds {total} payload bytes"),
                ));
            }
            let shape = read_shape(shapes, i).unwrap_or([0; 3]);
            if shape.contains(&0) {
                return Err(Error::record(
                    &self.path,
                    rec,
                    format!("shape {shape:?} has a zero dimension"),
                ));
            }
            let len = end - prev;
            let pixels = shape.iter().map(|&d| d as u128).product::<u128>();
            if self.layout.encoding == Encoding::Raw && pixels != len as u128 {
                return Err(Error::record(
                    &self.path,
                    rec,
                    format!("raw record holds {len} bytes but its shape {shape:?} needs {pixels}"),
                ));
            }
            prev = end;
        }
        if prev != total {
            return Err(Error::format(
                &self.path,
                format!("offsets end at {prev} but tensor \"bytes\" holds {total} bytes"),
            ));
        }
        Ok(())
    }
}
