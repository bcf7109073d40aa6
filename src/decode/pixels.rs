//! Decoded images: a borrowed HWC view, and pixels borrowed from the record
//! or owned.

use super::pixel_bytes;
use crate::ops::Size;
use crate::{Error, Result};

/// A borrowed HWC `u8` image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageView<'a> {
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
    /// Channels per pixel (1 or 3 for decoded images).
    pub channels: u32,
    /// `height × width × channels` bytes, row-major, channels interleaved.
    pub data: &'a [u8],
}

impl<'a> ImageView<'a> {
    /// A view, checked: `data.len()` must be `height × width × channels`.
    pub fn new(height: u32, width: u32, channels: u32, data: &'a [u8]) -> Result<Self> {
        let need = pixel_bytes(height, width, channels)?;
        if data.len() as u64 != need {
            return Err(Error::invalid(
                "image",
                format!(
                    "{} bytes for {height}x{width}x{channels} pixels (expected {need})",
                    data.len()
                ),
            ));
        }
        Ok(ImageView {
            height,
            width,
            channels,
            data,
        })
    }

    /// Height and width.
    pub fn size(&self) -> Size {
        Size::new(self.height, self.width)
    }
}

/// Decoded pixels: borrowed from the record when no work was needed, owned
/// otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pixels<'a> {
    /// Raw pixels borrowed from the record (no copy).
    Borrowed(ImageView<'a>),
    /// Decoded or converted pixels.
    Owned {
        /// Rows.
        height: u32,
        /// Columns.
        width: u32,
        /// Channels per pixel.
        channels: u32,
        /// `height × width × channels` bytes, HWC.
        data: Vec<u8>,
    },
}

impl Pixels<'_> {
    /// A view of the pixels.
    pub fn view(&self) -> ImageView<'_> {
        match self {
            Pixels::Borrowed(v) => *v,
            Pixels::Owned {
                height,
                width,
                channels,
                data,
            } => ImageView {
                height: *height,
                width: *width,
                channels: *channels,
                data,
            },
        }
    }

    /// Whether the pixels are borrowed from the record (no copy was made).
    pub fn is_borrowed(&self) -> bool {
        matches!(self, Pixels::Borrowed(_))
    }

    /// The pixels, copied if they were borrowed.
    pub fn into_owned(self) -> Pixels<'static> {
        match self {
            Pixels::Borrowed(v) => Pixels::Owned {
                height: v.height,
                width: v.width,
                channels: v.channels,
                data: v.data.to_vec(),
            },
            Pixels::Owned {
                height,
                width,
                channels,
                data,
            } => Pixels::Owned {
                height,
                width,
                channels,
                data,
            },
        }
    }
}
