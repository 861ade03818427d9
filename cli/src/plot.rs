//! Small SVG line plots (error vs NFE on log–log axes, quality vs steps) written without a plotting library:
//! axes with decade or evenly spaced ticks, one coloured polyline with markers per series, and a legend.

use std::fmt::Write as _;

/// One named line.
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// (x, y) points; non-finite or (on log axes) non-positive points are skipped.
    pub points: Vec<(f64, f64)>,
}

/// A plot description.
pub struct Plot {
    /// Title above the axes.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// Logarithmic x axis.
    pub x_log: bool,
    /// Logarithmic y axis.
    pub y_log: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const PALETTE: [&str; 12] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#393b79", "#ad494a",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            let v = if log { v.log10() } else { v };
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if log {
            (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
        } else {
            let pad = ((hi - lo) * 0.05).max(1e-12);
            (lo, hi) = (lo - pad, hi + pad);
        }
        Axis { log, lo, hi }
    }
    fn frac(&self, v: f64) -> f64 {
        let v = if self.log { v.log10() } else { v };
        (v - self.lo) / (self.hi - self.lo)
    }
    fn ticks(&self) -> Vec<(f64, String)> {
        if self.log {
            let label = |v: f64, e: i64| {
                if (0..5).contains(&e) { format!("{v}") } else { format!("{}e{e}", (v / 10f64.powi(e as i32)).round()) }
            };
            if self.hi - self.lo <= 3.0 {
                // Few decades: 1, 2, 5 × 10^k.
                let mut out = Vec::new();
                for e in self.lo as i64..=self.hi as i64 {
                    for m in [1.0, 2.0, 5.0] {
                        let v = m * 10f64.powi(e as i32);
                        if v.log10() <= self.hi + 1e-9 {
                            out.push((v, label(v, e)));
                        }
                    }
                }
                return out;
            }
            let step = ((self.hi - self.lo) / 8.0).ceil().max(1.0) as i64;
            (self.lo as i64..=self.hi as i64)
                .step_by(step as usize)
                .map(|e| (10f64.powi(e as i32), label(10f64.powi(e as i32), e)))
                .collect()
        } else {
            let raw = (self.hi - self.lo) / 6.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
            let mut v = (self.lo / step).ceil() * step;
            let mut out = Vec::new();
            while v <= self.hi + 1e-9 * step {
                out.push((v, format!("{}", (v / step).round() * step).trim_end_matches(".0").to_string()));
                v += step;
            }
            out
        }
    }
}

impl Plot {
    /// The plot as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let (w, h) = (860.0, 540.0);
        let (left, right, top, bottom) = (80.0, 210.0, 50.0, 60.0);
        let (pw, ph) = (w - left - right, h - top - bottom);
        let keep =
            |x: f64, y: f64| x.is_finite() && y.is_finite() && (!self.x_log || x > 0.0) && (!self.y_log || y > 0.0);
        let pts = || self.series.iter().flat_map(|s| s.points.iter().copied()).filter(|&(x, y)| keep(x, y));
        let xa = Axis::new(pts().map(|p| p.0), self.x_log);
        let ya = Axis::new(pts().map(|p| p.1), self.y_log);
        let px = |x: f64| left + xa.frac(x) * pw;
        let py = |y: f64| top + (1.0 - ya.frac(y)) * ph;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
            left + pw / 2.0,
            escape(&self.title)
        );
        for (v, label) in xa.ticks() {
            let x = px(v);
            let _ =
                writeln!(s, r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/>"##, top + ph);
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                top + ph + 18.0,
                escape(&label)
            );
        }
        for (v, label) in ya.ticks() {
            let y = py(v);
            let _ =
                writeln!(s, r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/>"##, left + pw);
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 6.0,
                y + 4.0,
                escape(&label)
            );
        }
        let _ = writeln!(s, r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            h - 18.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            top + ph / 2.0,
            escape(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = series.points.iter().copied().filter(|&(x, y)| keep(x, y)).collect();
            if points.len() > 1 {
                let path: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                    path.join(" ")
                );
            }
            for &(x, y) in &points {
                let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#, px(x), py(y));
            }
            let ly = top + 14.0 + 18.0 * i as f64;
            let lx = left + pw + 16.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
                lx + 22.0
            );
            let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, lx + 28.0, ly + 4.0, escape(&series.name));
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_every_series_and_skips_bad_points() {
        let plot = Plot {
            title: "error <vs> NFE".into(),
            x_label: "NFE".into(),
            y_label: "RMS error".into(),
            x_log: true,
            y_log: true,
            series: vec![
                Series { name: "ddim".into(), points: vec![(5.0, 0.1), (10.0, 0.05), (20.0, 0.0)] },
                Series { name: "dpm++2m".into(), points: vec![(5.0, 0.01), (10.0, f64::NAN), (20.0, 1e-4)] },
            ],
        };
        let svg = plot.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("error &lt;vs&gt; NFE") && svg.contains(">ddim<") && svg.contains(">dpm++2m<"));
        assert_eq!(svg.matches("<circle").count(), 4, "zero and NaN errors are skipped on a log axis");
        assert!(svg.contains(">1e-4<") || svg.contains(">2e-4<"), "{svg}");
        assert!(svg.contains(">10<") && svg.contains(">20<"), "NFE ticks in plain numbers");
    }
}
