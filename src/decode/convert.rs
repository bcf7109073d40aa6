//! Sample conversions after decoding: 16-bit to 8-bit, grey to RGB and RGB
//! to grey (BT.601 luma, PIL's formula), in place.

use super::Header;

/// ITU-R BT.601 luma, PIL's integer formula (weights 0.299, 0.587, 0.114
/// in 16-bit fixed point, rounded); at most 255 for any input.
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((19_595 * r as u32 + 38_470 * g as u32 + 7_471 * b as u32 + 32_768) >> 16) as u8
}

/// Turns the decoder's native pixels at the start of `buf` into `channels`
/// 8-bit channels at the start of `buf`. `buf` holds at least
/// `max(native bytes, output bytes)`.
pub(super) fn convert_in_place(buf: &mut [u8], h: &Header, channels: u32) {
    let n = h.height as usize * h.width as usize;
    let sc = h.samples as usize;
    if h.bytes_per_sample == 2 {
        // Forward: byte k is written after bytes 2k, 2k+1 were read.
        for k in 0..n * sc {
            let v = u16::from_ne_bytes([buf[2 * k], buf[2 * k + 1]]);
            buf[k] = ((v as u32 + 128) / 257) as u8;
        }
    }
    let (cc, tc) = (h.color_channels as usize, channels as usize);
    if sc == tc {
        return; // same samples per pixel: grey -> grey or RGB -> RGB
    }
    let px = |buf: &[u8], p: usize| -> [u8; 3] {
        let s = &buf[p * sc..p * sc + cc];
        if cc == 1 {
            [s[0]; 3]
        } else {
            [s[0], s[1], s[2]]
        }
    };
    let put = |buf: &mut [u8], p: usize, rgb: [u8; 3]| {
        if tc == 1 {
            buf[p] = if cc == 1 {
                rgb[0]
            } else {
                luma(rgb[0], rgb[1], rgb[2])
            };
        } else {
            buf[p * 3..p * 3 + 3].copy_from_slice(&rgb);
        }
    };
    if tc < sc {
        // Shrinking: front to back never overwrites an unread pixel.
        for p in 0..n {
            let rgb = px(buf, p);
            put(buf, p, rgb);
        }
    } else {
        // Growing: back to front.
        for p in (0..n).rev() {
            let rgb = px(buf, p);
            put(buf, p, rgb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_is_bt601() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(0, 0, 0), 0);
        assert_eq!(luma(255, 0, 0), 76); // 0.299 * 255 = 76.2
        assert_eq!(luma(0, 255, 0), 150); // 0.587 * 255 = 149.7
        assert_eq!(luma(0, 0, 255), 29); // 0.114 * 255 = 29.1
    }
}
