//! A PNG plot of φ over the meta steps, in human units, drawn with the
//! `image` crate and a built-in 3×5 pixel font (no system fonts).
//!
//! Four panels: the four probabilities; the crop's minimum area; the
//! rotation's maximum angle (degrees); the noise's maximum σ.

use std::path::Path;

use image::{Rgb, RgbImage};

use super::relaxed::{human_units_in, Family, NUM_PHI};
use crate::{Error, Result};

const WIDTH: u32 = 720;
const PANEL: u32 = 170;
const LEFT: u32 = 70;
const RIGHT: u32 = 20;
const TOP: u32 = 28;
const BOTTOM: u32 = 22;
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const GREY: Rgb<u8> = Rgb([200, 200, 200]);
const BLACK: Rgb<u8> = Rgb([20, 20, 20]);
const COLORS: [Rgb<u8>; 4] = [
    Rgb([214, 39, 40]),
    Rgb([44, 160, 44]),
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
];

/// 3×5 glyphs, rows top to bottom, 3 bits each (MSB left).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '=' => [0, 7, 0, 7, 0],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '/' => [1, 1, 2, 4, 4],
        ':' => [0, 2, 0, 2, 0],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        _ => [0; 5],
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Writes `text` with its top-left corner at `(x, y)`, glyphs scaled by 2.
fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, c: Rgb<u8>) {
    for (k, ch) in s.chars().enumerate() {
        let g = glyph(ch);
        for (r, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        put(
                            img,
                            x + 8 * k as i64 + 2 * col + dx,
                            y + 2 * r as i64 + dy,
                            c,
                        );
                    }
                }
            }
        }
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb<u8>) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).clamp(1, 10_000);
    for k in 0..=n {
        let t = k as f64 / n as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        put(img, x.round() as i64, y.round() as i64, c);
        put(img, x.round() as i64, y.round() as i64 + 1, c);
    }
}

fn label(v: f64) -> String {
    if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One panel: `series` (name, values) over the steps, y from `lo` to `hi`
/// (widened to the data).
fn panel(
    img: &mut RgbImage,
    top: u32,
    title: &str,
    series: &[(&str, Vec<f64>)],
    lo: f64,
    hi: f64,
    steps: usize,
) {
    let finite = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite());
    let (mut lo, mut hi) = finite.fold((lo, hi), |(a, b), v| (a.min(v), b.max(v)));
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
        lo -= 0.0;
    }
    let (x0, x1) = (LEFT as f64, (WIDTH - RIGHT) as f64);
    let (y0, y1) = ((top + TOP) as f64, (top + PANEL - BOTTOM) as f64);
    for k in 0..=4 {
        let y = y0 + (y1 - y0) * k as f64 / 4.0;
        line(img, (x0, y), (x1, y), GREY);
        let v = hi - (hi - lo) * k as f64 / 4.0;
        text(img, 6, y as i64 - 5, &label(v), BLACK);
    }
    line(img, (x0, y0), (x0, y1), BLACK);
    text(img, LEFT as i64, top as i64 + 6, title, BLACK);
    let mut lx = LEFT as i64 + 8 * title.len() as i64 + 24;
    for (k, (name, values)) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        if series.len() > 1 {
            for dy in 0..8 {
                for dx in 0..8 {
                    put(img, lx + dx, top as i64 + 7 + dy, c);
                }
            }
            text(img, lx + 12, top as i64 + 6, name, c);
            lx += 12 + 8 * name.len() as i64 + 16;
        }
        let n = values.len().max(2) - 1;
        let pt = |i: usize, v: f64| {
            (
                x0 + (x1 - x0) * i as f64 / n as f64,
                y1 - (y1 - y0) * (v - lo) / (hi - lo),
            )
        };
        for i in 1..values.len() {
            if values[i - 1].is_finite() && values[i].is_finite() {
                line(img, pt(i - 1, values[i - 1]), pt(i, values[i]), c);
            }
        }
    }
    text(
        img,
        LEFT as i64,
        (top + PANEL - BOTTOM + 6) as i64,
        "0",
        BLACK,
    );
    let s = format!("{steps} META STEPS");
    text(
        img,
        (WIDTH - RIGHT) as i64 - 8 * s.len() as i64,
        (top + PANEL - BOTTOM + 6) as i64,
        &s,
        BLACK,
    );
}

/// Draws the history of φ of `family` (one entry per meta step) as a PNG
/// at `path`; in the one-op family the top panel shows each op's share.
pub fn plot_history(history: &[[f32; NUM_PHI]], family: Family, path: &Path) -> Result<()> {
    let h: Vec<[f64; NUM_PHI]> = history
        .iter()
        .map(|p| human_units_in(family, &p.map(|v| v as f64)))
        .collect();
    let col = |k: usize| h.iter().map(|r| r[k]).collect::<Vec<f64>>();
    let mut img = RgbImage::from_pixel(WIDTH, 4 * PANEL, WHITE);
    let steps = history.len();
    let title = match family {
        Family::Independent => "P",
        Family::OneOp => "SHARE (ONE OP PER SAMPLE)",
    };
    panel(
        &mut img,
        0,
        title,
        &[
            ("CROP", col(0)),
            ("ROTATE", col(2)),
            ("FLIP", col(4)),
            ("NOISE", col(5)),
        ],
        0.0,
        1.0,
        steps,
    );
    panel(
        &mut img,
        PANEL,
        "CROP MIN AREA",
        &[("", col(1))],
        0.0,
        1.0,
        steps,
    );
    panel(
        &mut img,
        2 * PANEL,
        "ROTATE MAX ANGLE (DEG)",
        &[("", col(3))],
        0.0,
        30.0,
        steps,
    );
    panel(
        &mut img,
        3 * PANEL,
        "NOISE MAX SIGMA",
        &[("", col(6))],
        0.0,
        0.1,
        steps,
    );
    img.save(path)
        .map_err(|e| Error::format(path, format!("cannot write PNG: {e}")))
}
