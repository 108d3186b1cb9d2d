//! Small SVG charts for evaluation reports: lines or points per series, optional
//! horizontal reference lines (dense search), linear or log₂ x axis. Plain SVG text, so a
//! report opens in any browser and diffs in review.

use std::fmt::Write as _;

/// One named series of (x, y) points, drawn as a line through its points (or points
/// only when `line` is false).
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Whether to join the points.
    pub line: bool,
}

/// A chart: title, axis labels, series and horizontal reference lines.
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// Log₂ x axis (for k = 16, 32, 64, …).
    pub log2_x: bool,
    /// Log₁₀ y axis (for latencies across orders of magnitude).
    pub log10_y: bool,
    /// The data.
    pub series: Vec<Series>,
    /// Named horizontal lines at a y value.
    pub references: Vec<(String, f64)>,
}

const W: f64 = 720.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Five or so round tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

impl Chart {
    /// The chart as a standalone SVG document.
    pub fn svg(&self) -> String {
        let fx = |x: f64| if self.log2_x { x.max(1e-12).log2() } else { x };
        let fy = |y: f64| {
            if self.log10_y {
                y.max(1e-12).log10()
            } else {
                y
            }
        };
        let xs: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| fx(p.0)))
            .collect();
        let ys: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| fy(p.1)))
            .chain(self.references.iter().map(|r| fy(r.1)))
            .collect();
        let bounds = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !lo.is_finite() {
                (0.0, 1.0)
            } else if hi - lo < 1e-9 {
                (lo - 0.5, hi + 0.5)
            } else {
                let pad = (hi - lo) * 0.06;
                (lo - pad, hi + pad)
            }
        };
        let (x0, x1) = bounds(&xs);
        let (y0, y1) = bounds(&ys);
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let py = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
        let mut s = String::new();
        let _ = write!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>
"##,
            LEFT + pw / 2.0,
            esc(&self.title)
        );
        let label = |v: f64, log2: bool, log10: bool| {
            if log2 {
                format!("{}", 2f64.powf(v).round())
            } else if log10 {
                format!("{}", 10f64.powf(v))
            } else {
                format!("{}", (v * 1e4).round() / 1e4)
            }
        };
        let x_ticks = if self.log2_x {
            (x0.ceil() as i64..=x1.floor() as i64)
                .map(|v| v as f64)
                .collect()
        } else {
            ticks(x0, x1)
        };
        for t in x_ticks {
            let x = px(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{TOP}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                label(t, self.log2_x, false)
            );
        }
        let y_ticks = if self.log10_y {
            (y0.ceil() as i64..=y1.floor() as i64)
                .map(|v| v as f64)
                .collect()
        } else {
            ticks(y0, y1)
        };
        for t in y_ticks {
            let y = py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                label(t, false, self.log10_y)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 14.0,
            esc(&self.x_label),
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        let mut legend = Vec::new();
        for (i, (name, y)) in self.references.iter().enumerate() {
            let c = COLOURS[(self.series.len() + i) % COLOURS.len()];
            let y = py(fy(*y));
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{c}" stroke-dasharray="6 4" stroke-width="1.5"/>"#,
                LEFT + pw
            );
            legend.push((name.clone(), c, true));
        }
        for (i, series) in self.series.iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            let pts: Vec<String> = series
                .points
                .iter()
                .map(|p| format!("{:.1},{:.1}", px(fx(p.0)), py(fy(p.1))))
                .collect();
            if series.line && pts.len() > 1 {
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
                    pts.join(" ")
                );
            }
            for p in &pts {
                let (x, y) = p.split_once(',').expect("x,y");
                let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{c}"/>"#);
            }
            legend.push((series.name.clone(), c, false));
        }
        for (i, (name, c, dashed)) in legend.iter().enumerate() {
            let y = TOP + 10.0 + i as f64 * 18.0;
            let x = W - RIGHT + 14.0;
            let dash = if *dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{c}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
                x + 22.0,
                x + 28.0,
                y + 4.0,
                esc(name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_hold_every_series_and_reference() {
        let chart = Chart {
            title: "NDCG@10 vs k <test>".into(),
            x_label: "k".into(),
            y_label: "NDCG@10".into(),
            log2_x: true,
            log10_y: false,
            series: vec![Series {
                name: "symmetric".into(),
                points: vec![(16.0, 0.4), (32.0, 0.5), (64.0, 0.55)],
                line: true,
            }],
            references: vec![("dense".into(), 0.64)],
        };
        let svg = chart.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("&lt;test&gt;") && svg.contains(">dense<"));
        for k in [">16<", ">32<", ">64<"] {
            assert!(svg.contains(k), "x tick {k}");
        }
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.12, 0.68);
        assert!(t.len() >= 3 && t[0] >= 0.12 && *t.last().unwrap() <= 0.68);
        assert!(t
            .windows(2)
            .all(|w| ((w[1] - w[0]) - (t[1] - t[0])).abs() < 1e-9));
    }
}
