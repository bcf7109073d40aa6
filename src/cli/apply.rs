//! `metaug apply`: explicit augmentation parameters on one image file.
//!
//! ```text
//! metaug apply photo.jpg --crop 100,50,200,150 --rotate 15 --flip --noise 0.05 -o out.png
//! ```
//!
//! The crop box `X,Y,W,H` (pixels: top-left corner, width, height) becomes
//! the library's crop parameters as
//!
//! ```text
//! cw = W / width,  ch = H / height           (fractions of the image)
//! area = cw · ch,  aspect = cw / ch          (so Geometry::crop_size() = (cw, ch))
//! cx = 2 · (X + W/2) / width  − 1            (box centre, normalised to [-1, 1])
//! cy = 2 · (Y + H/2) / height − 1
//! ```
//!
//! `--rotate` turns the view counter-clockwise on screen by that many degrees
//! about the crop centre (the library's angle, in degrees). The output is a
//! PNG with the input's channels (grey stays grey), `u8`, without
//! normalisation; its size is `--size HxW`, else the crop's size, else the
//! image's.

use std::path::PathBuf;

use metaug::decode::{decode_bytes, probe_bytes, sniff, DecodeLimits};
use metaug::ops::philox::{PhiloxStream, STREAM_NOISE};
use metaug::ops::{augment_into, DType, Geometry, Layout, OutputSpec, SampleParams, Size};
use metaug::{Error, Result};

/// Arguments of `metaug apply`.
#[derive(clap::Args)]
pub struct ApplyArgs {
    /// Input image (PNG or JPEG).
    pub image: PathBuf,
    /// Rotation in degrees, counter-clockwise on screen, about the crop centre.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub rotate: f32,
    /// Crop box in pixels: X,Y,W,H (top-left corner, width, height).
    #[arg(long, value_name = "X,Y,W,H")]
    pub crop: Option<String>,
    /// Mirror the view horizontally.
    #[arg(long)]
    pub flip: bool,
    /// Standard deviation of Gaussian noise, in [0, 1] pixel units.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "SIGMA",
        allow_negative_numbers = true
    )]
    pub noise: f32,
    /// Output size HxW (default: the crop's size, or the image's).
    #[arg(long, value_name = "HxW")]
    pub size: Option<String>,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output PNG file.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

/// A crop box in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CropBox {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

fn parse_crop(s: &str) -> Result<CropBox> {
    let bad = |why: &str| {
        Error::invalid(
            "--crop",
            format!("{s:?}: {why} (expected X,Y,W,H in pixels)"),
        )
    };
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 4 {
        return Err(bad("four numbers are needed"));
    }
    let mut v = [0u32; 4];
    for (k, p) in parts.iter().enumerate() {
        v[k] = p
            .parse()
            .map_err(|_| bad(&format!("{p:?} is not a whole number")))?;
    }
    let [x, y, w, h] = v;
    if w == 0 || h == 0 {
        return Err(bad("width and height must be at least 1"));
    }
    Ok(CropBox { x, y, w, h })
}

fn parse_size(s: &str) -> Result<Size> {
    let bad = |why: &str| {
        Error::invalid(
            "--size",
            format!("{s:?}: {why} (expected HxW, e.g. 224x224)"),
        )
    };
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(|| bad("no 'x'"))?;
    let h: u32 = h
        .trim()
        .parse()
        .map_err(|_| bad("height is not a whole number"))?;
    let w: u32 = w
        .trim()
        .parse()
        .map_err(|_| bad("width is not a whole number"))?;
    Ok(Size::new(h, w))
}

/// The crop geometry of a pixel box inside a `width × height` image (see the
/// module docs), or an error if the box does not fit.
fn crop_geometry(b: CropBox, width: u32, height: u32) -> Result<Geometry> {
    let fits =
        |start: u32, len: u32, size: u32| start.checked_add(len).is_some_and(|end| end <= size);
    if !fits(b.x, b.w, width) || !fits(b.y, b.h, height) {
        return Err(Error::invalid(
            "--crop",
            format!(
                "box {},{},{},{} does not fit inside the {width}x{height} (width x height) image",
                b.x, b.y, b.w, b.h
            ),
        ));
    }
    let (wi, hi) = (width as f64, height as f64);
    let (cw, ch) = (b.w as f64 / wi, b.h as f64 / hi);
    Ok(Geometry {
        area: (cw * ch) as f32,
        aspect: (cw / ch) as f32,
        center: [
            (2.0 * (b.x as f64 + b.w as f64 / 2.0) / wi - 1.0) as f32,
            (2.0 * (b.y as f64 + b.h as f64 / 2.0) / hi - 1.0) as f32,
        ],
        angle: 0.0,
    })
}

/// Runs the command.
pub fn run(args: ApplyArgs) -> Result<()> {
    if !args.rotate.is_finite() {
        return Err(Error::invalid(
            "--rotate",
            format!("{} is not a finite angle", args.rotate),
        ));
    }
    if !(args.noise.is_finite() && args.noise >= 0.0) {
        return Err(Error::invalid(
            "--noise",
            format!("{} (must be a finite sigma >= 0)", args.noise),
        ));
    }
    let crop = args.crop.as_deref().map(parse_crop).transpose()?;
    let size = args.size.as_deref().map(parse_size).transpose()?;

    let bytes = std::fs::read(&args.image).map_err(|e| Error::io(&args.image, e))?;
    let encoding =
        sniff(&bytes).ok_or_else(|| Error::format(&args.image, "not a PNG or JPEG file"))?;
    let limits = DecodeLimits::default();
    let in_file = |e: Error| Error::format(&args.image, e.to_string());
    let shape = probe_bytes(&bytes, encoding, &limits).map_err(in_file)?;
    let [height, width, channels] = shape;
    let pixels = decode_bytes(&bytes, encoding, shape, channels, &limits).map_err(in_file)?;

    let mut geometry = match crop {
        Some(b) => crop_geometry(b, width, height)?,
        None => Geometry::IDENTITY,
    };
    geometry.angle = args.rotate.to_radians();
    let out_size = size.unwrap_or(match crop {
        Some(b) => Size::new(b.h, b.w),
        None => Size::new(height, width),
    });
    let spec = OutputSpec::new(out_size, channels)
        .with_dtype(DType::U8)
        .with_layout(Layout::Nhwc);
    spec.validate()?;
    let params = SampleParams {
        geometry,
        flip: if args.flip { 1.0 } else { 0.0 },
        sigma: args.noise,
    };
    let mut out = vec![0u8; spec.sample_bytes()];
    let noise = PhiloxStream::new(args.seed, 0, 0, STREAM_NOISE);
    augment_into(pixels.view(), &params, noise, &spec, &mut out);

    let color = if channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    image::save_buffer_with_format(
        &args.output,
        &out,
        out_size.width,
        out_size.height,
        color,
        image::ImageFormat::Png,
    )
    .map_err(|e| match e {
        image::ImageError::IoError(io) => Error::io(&args.output, io),
        other => Error::format(&args.output, other.to_string()),
    })?;
    println!(
        "{} ({}x{}x{}) -> {} ({}x{}x{})",
        args.image.display(),
        height,
        width,
        channels,
        args.output.display(),
        out_size.height,
        out_size.width,
        channels
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_box_parsing_and_geometry() {
        assert_eq!(
            parse_crop("1, 2,3,4").unwrap(),
            CropBox {
                x: 1,
                y: 2,
                w: 3,
                h: 4
            }
        );
        for bad in [
            "1,2,3",
            "1,2,3,4,5",
            "a,2,3,4",
            "1,2,0,4",
            "1,2,3,0",
            "-1,2,3,4",
        ] {
            assert!(parse_crop(bad).is_err(), "{bad}");
        }
        let g = crop_geometry(
            CropBox {
                x: 0,
                y: 0,
                w: 20,
                h: 10,
            },
            20,
            10,
        )
        .unwrap();
        assert_eq!((g.area, g.aspect, g.center), (1.0, 1.0, [0.0, 0.0]));
        let g = crop_geometry(
            CropBox {
                x: 10,
                y: 0,
                w: 10,
                h: 5,
            },
            20,
            10,
        )
        .unwrap();
        let (cw, ch) = g.crop_size();
        assert!((cw - 0.5).abs() < 1e-7 && (ch - 0.5).abs() < 1e-7);
        assert_eq!(g.center, [0.5, -0.5]);
        assert!(crop_geometry(
            CropBox {
                x: 11,
                y: 0,
                w: 10,
                h: 5
            },
            20,
            10
        )
        .is_err());
        assert!(crop_geometry(
            CropBox {
                x: u32::MAX,
                y: 0,
                w: 10,
                h: 5
            },
            20,
            10
        )
        .is_err());
    }

    #[test]
    fn size_parsing() {
        assert_eq!(parse_size("224x200").unwrap(), Size::new(224, 200));
        for bad in ["224", "x2", "2x", "axb"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
