//! SVG plots of slowdown against cumulative message fraction, the Homa papers' figure.
//!
//! The x axis is the cumulative fraction of messages (0 to 1, linear); a message size
//! is placed at the fraction of messages no longer than it, so every size gets as much
//! room as it has messages. Tick labels show the message size at each tenth (the first
//! series' point nearest to it, if one is within 0.05; the axis title says so when the series disagree, as
//! for different workloads) above the fraction itself. The y axis is the
//! slowdown on a log scale from 1 (or lower if a value is lower) up to the next
//! 1-2-5 step above the largest value. Each series is one polyline with markers, named
//! in the legend.
//!
//! The writer has no dependency; it emits plain SVG 1.1 that browsers, `rsvg-convert`
//! and ImageMagick render.
//!
//! ```
//! use homa_eval::plot::{slowdown_svg, Series};
//!
//! let series = vec![
//!     Series::new("homa P99", vec![(0.2, 1.5, 100), (0.6, 2.0, 1000), (1.0, 8.0, 1_000_000)]),
//!     Series::new("homa P50", vec![(0.2, 1.1, 100), (0.6, 1.2, 1000), (1.0, 3.0, 1_000_000)]),
//! ];
//! let svg = slowdown_svg("W4, 80 % load", &series);
//! assert!(svg.starts_with("<svg"));
//! assert!(svg.contains("homa P99"));
//! assert!(svg.contains("<polyline"));
//! ```

use core::fmt::Write as _;

/// One line of a plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The name shown in the legend (a transport, workload or load).
    pub label: String,
    /// Points `(cumulative fraction in 0..=1, slowdown, message size in bytes)`, in
    /// increasing fraction. Points with a non-finite or non-positive slowdown are
    /// skipped.
    pub points: Vec<(f64, f64, u32)>,
}

impl Series {
    /// A series named `label`.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64, u32)>) -> Series {
        Series {
            label: label.into(),
            points,
        }
    }
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 220.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 90.0;

const COLOURS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Escapes text for SVG/XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// A message size for an axis label: `8`, `1.4K`, `10K`, `1M`, `29.4M` (decimal units).
///
/// ```
/// use homa_eval::plot::size_label;
/// assert_eq!(size_label(8), "8");
/// assert_eq!(size_label(1430), "1.4K");
/// assert_eq!(size_label(10_000), "10K");
/// assert_eq!(size_label(1_000_000), "1M");
/// assert_eq!(size_label(29_400_000), "29.4M");
/// ```
pub fn size_label(size: u32) -> String {
    fn short(v: f64, unit: &str) -> String {
        if v >= 100.0 || (v - v.round()).abs() < 0.05 {
            format!("{}{unit}", v.round())
        } else {
            format!("{v:.1}{unit}")
        }
    }
    let s = f64::from(size);
    if size >= 1_000_000 {
        short(s / 1e6, "M")
    } else if size >= 1000 {
        short(s / 1e3, "K")
    } else {
        size.to_string()
    }
}

/// Renders `series` as an SVG document titled `title`; see the [module docs](self).
pub fn slowdown_svg(title: &str, series: &[Series]) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let valid = |p: &&(f64, f64, u32)| p.1.is_finite() && p.1 > 0.0 && p.0.is_finite();
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().filter(valid).map(|p| p.1))
        .collect();
    let max = values.iter().copied().fold(1.0, f64::max);
    let min = values.iter().copied().fold(1.0, f64::min);
    let y_lo = 10f64.powf(min.log10().floor());
    let y_hi = next_step(max * 1.05);
    let (l_lo, l_hi) = (y_lo.log10(), y_hi.log10());
    let x_of = |f: f64| LEFT + f.clamp(0.0, 1.0) * plot_w;
    let y_of = |v: f64| TOP + plot_h - (v.log10() - l_lo) / (l_hi - l_lo) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="17">{}</text>"#,
        LEFT + plot_w / 2.0,
        xml_escape(title)
    );

    // Horizontal grid lines and y labels at 1, 2, 5 × 10^k.
    let steps: &[f64] = if l_hi - l_lo <= 1.0 + 1e-9 {
        &[1.0, 1.5, 2.0, 3.0, 5.0, 7.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut decade = y_lo;
    while decade < y_hi * 1.0001 {
        for &m in steps {
            let v = decade * m;
            if v < y_lo * 0.9999 || v > y_hi * 1.0001 {
                continue;
            }
            let y = y_of(v);
            let (stroke, width) = if m == 1.0 {
                ("#bbbbbb", 1.0)
            } else {
                ("#e4e4e4", 0.8)
            };
            let _ = writeln!(
                svg,
                r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{stroke}" stroke-width="{width}"/>"#,
                LEFT + plot_w
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y + 4.0,
                number_label(v)
            );
        }
        decade *= 10.0;
    }

    // Vertical grid lines at each tenth, labelled with the size there and the fraction.
    let reference: Vec<&(f64, f64, u32)> = series
        .first()
        .map(|s| s.points.iter().filter(valid).collect())
        .unwrap_or_default();
    for k in 0..=10 {
        let f = f64::from(k) / 10.0;
        let x = x_of(f);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#eeeeee" stroke-width="0.8"/>"##,
            TOP + plot_h
        );
        let nearest = reference
            .iter()
            .filter(|p| (p.0 - f).abs() <= 0.05)
            .min_by(|a, b| (a.0 - f).abs().total_cmp(&(b.0 - f).abs()));
        if let Some(p) = nearest.filter(|_| k > 0) {
            let _ = writeln!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + plot_h + 18.0,
                size_label(p.2)
            );
        }
        let _ = writeln!(
            svg,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#777777" font-size="11">{:.0}%</text>"##,
            TOP + plot_h + 34.0,
            f * 100.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let same_sizes = series.iter().all(|s| {
        s.points.iter().filter(valid).all(|p| {
            reference
                .iter()
                .filter(|r| (r.0 - p.0).abs() < 0.02)
                .all(|r| r.2 == p.2)
        })
    });
    let x_title = match series.first() {
        Some(s) if !same_sizes => format!(
            "Message size (bytes; sizes of \u{201c}{}\u{201d}) at its cumulative fraction of messages",
            s.label
        ),
        _ => "Message size (bytes) at its cumulative fraction of messages".to_owned(),
    };
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 18.0,
        xml_escape(&x_title)
    );
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">Slowdown (log scale)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );

    // Series.
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let dash = if (i / COLOURS.len()) % 2 == 1 {
            r#" stroke-dasharray="6 3""#
        } else {
            ""
        };
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(valid)
            .map(|p| (x_of(p.0), y_of(p.1)))
            .collect();
        let mut list = String::new();
        for (x, y) in &pts {
            let _ = write!(list, "{x:.1},{y:.1} ");
        }
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
            list.trim_end()
        );
        for (x, y) in &pts {
            let _ = writeln!(
                svg,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#
            );
        }
        let ly = TOP + 10.0 + 22.0 * i as f64;
        let lx = LEFT + plot_w + 15.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"{dash}/>"#,
            lx + 28.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 34.0,
            ly + 4.0,
            xml_escape(&s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The smallest 1, 2 or 5 × 10^k at least `v` (at least 2).
fn next_step(v: f64) -> f64 {
    let mut d = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            if d * m >= v && d * m >= 2.0 {
                return d * m;
            }
        }
        d *= 10.0;
    }
}

fn number_label(v: f64) -> String {
    if v >= 1.0 {
        let r = (v * 10.0).round() / 10.0;
        format!("{r}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_labels_and_title() {
        let svg = slowdown_svg(
            "a<b & c",
            &[Series::new("\"x\" & <y>", vec![(0.5, 2.0, 10)])],
        );
        assert!(svg.contains("a&lt;b &amp; c"));
        assert!(svg.contains("&quot;x&quot; &amp; &lt;y&gt;"));
        assert!(!svg.contains("<y>"));
    }

    #[test]
    fn skips_bad_points_and_handles_empty_input() {
        let svg = slowdown_svg(
            "t",
            &[Series::new("s", vec![(0.5, f64::NAN, 10), (0.7, 0.0, 20)])],
        );
        assert!(svg.ends_with("</svg>\n"));
        let svg = slowdown_svg("empty", &[]);
        assert!(svg.contains("Slowdown"));
    }

    #[test]
    fn y_axis_reaches_the_largest_value() {
        assert_eq!(next_step(1.0), 2.0);
        assert_eq!(next_step(2.1), 5.0);
        assert_eq!(next_step(37.0), 50.0);
        assert_eq!(next_step(100.0), 100.0);
        let svg = slowdown_svg("t", &[Series::new("s", vec![(1.0, 37.0, 10)])]);
        assert!(svg.contains(">50</text>"));
    }
}
