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

/// The plot area's size, px.
const PLOT_W: f64 = 450.0;
const PLOT_H: f64 = 345.0;
/// Margins around the plot area: tick labels and the y label on the left, the title on
/// top, tick labels and the x label below, the legend (at least this wide) on the right.
const LEFT: f64 = 70.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const MIN_RIGHT: f64 = 200.0;
/// Font size of tick labels, axis labels and the legend, px.
const FONT: f64 = 12.0;
/// Legend layout: gap between the plot area and a row's line sample, the sample's
/// length, the text's offset from the sample's start, the row pitch, and the margin
/// kept free right of the longest label and below the last row.
const LEGEND_GAP: f64 = 14.0;
const LEGEND_SAMPLE: f64 = 22.0;
const LEGEND_TEXT: f64 = 28.0;
const LEGEND_ROW: f64 = 18.0;
const LEGEND_MARGIN: f64 = 12.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An upper bound of the width of `text` set in a sans-serif font of `size` px: per
/// character, the advance width of the widest glyph of its class in DejaVu Sans (the
/// widest of the common sans-serif fonts, and fontconfig's usual `sans-serif`; Arial,
/// Helvetica and Liberation Sans set narrower); 1.25 em (a colour emoji's advance, wider
/// than any letter or CJK character) for anything outside ASCII.
fn text_width(text: &str, size: f64) -> f64 {
    let em: f64 = text
        .chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | 'I' | 'J' | '.' | ',' | ':' | ';' | '\'' | '|' => 0.34,
            'f' | 't' | 'r' | ' ' | '(' | ')' | '[' | ']' | '-' | '/' | '!' => 0.42,
            'w' => 0.82,
            'M' => 0.87,
            'm' | 'W' | '@' | '%' => 1.0,
            '=' | '+' | '<' | '>' | '~' | '#' | '^' | '&' => 0.84,
            'A'..='Z' => 0.79,
            c if c.is_ascii() => 0.64,
            _ => 1.25,
        })
        .sum();
    em * size
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
        let (pw, ph) = (PLOT_W, PLOT_H);
        // The canvas grows to hold the whole legend: its longest label and every row.
        let labels = self.references.iter().map(|r| &r.0);
        let labels: Vec<&String> = labels.chain(self.series.iter().map(|s| &s.name)).collect();
        let longest = labels
            .iter()
            .map(|l| text_width(l, FONT))
            .fold(0.0, f64::max);
        let right = MIN_RIGHT.max(LEGEND_GAP + LEGEND_TEXT + longest + LEGEND_MARGIN);
        let (w, h) = (
            (LEFT + pw + right).ceil(),
            (TOP + ph + BOTTOM).max(Self::legend_y(labels.len()) + LEGEND_MARGIN),
        );
        let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let py = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
        let mut s = String::new();
        let _ = write!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="{FONT}">
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
            TOP + ph + BOTTOM - 14.0,
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
            let y = Self::legend_y(i);
            let x = LEFT + pw + LEGEND_GAP;
            let dash = if *dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{c}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
                x + LEGEND_SAMPLE,
                x + LEGEND_TEXT,
                y + 4.0,
                esc(name)
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// The y of legend row `i`'s line sample (its text's baseline is 4 px lower).
    fn legend_y(i: usize) -> f64 {
        TOP + 10.0 + i as f64 * LEGEND_ROW
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The number in `attr="…"` of the first element of `svg` from `at` on.
    fn attr(svg: &str, at: usize, attr: &str) -> f64 {
        let key = format!(" {attr}=\"");
        let start = at + svg[at..].find(&key).expect(attr) + key.len();
        let end = start + svg[start..].find('"').unwrap();
        svg[start..end].parse().unwrap()
    }

    /// The viewBox's width and height; asserts that the size attributes agree with it.
    fn view_box(svg: &str) -> (f64, f64) {
        let start = svg.find("viewBox=\"0 0 ").unwrap() + "viewBox=\"0 0 ".len();
        let end = start + svg[start..].find('"').unwrap();
        let (w, h) = svg[start..end].split_once(' ').unwrap();
        let (w, h): (f64, f64) = (w.parse().unwrap(), h.parse().unwrap());
        assert_eq!((attr(svg, 0, "width"), attr(svg, 0, "height")), (w, h));
        (w, h)
    }

    /// (x, y, text) of every start-anchored `<text>` (the legend's labels), unescaped.
    pub(in crate::eval) fn legend_labels(svg: &str) -> Vec<(f64, f64, String)> {
        svg.match_indices("<text ")
            .filter_map(|(at, _)| {
                let open_end = at + svg[at..].find('>').unwrap();
                let tag = &svg[at..open_end];
                if tag.contains("text-anchor") || tag.contains("transform") {
                    return None;
                }
                let close = open_end + svg[open_end..].find("</text>").unwrap();
                let text = svg[open_end + 1..close]
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&");
                Some((attr(svg, at, "x"), attr(svg, at, "y"), text))
            })
            .collect()
    }

    /// (cx, cy) of every point drawn.
    pub(in crate::eval) fn circles(svg: &str) -> Vec<(f64, f64)> {
        svg.match_indices("<circle ")
            .map(|(at, _)| (attr(svg, at, "cx"), attr(svg, at, "cy")))
            .collect()
    }

    fn chart(series: Vec<Series>, references: Vec<(String, f64)>) -> Chart {
        Chart {
            title: "NDCG@10 vs k <test>".into(),
            x_label: "k".into(),
            y_label: "NDCG@10".into(),
            log2_x: true,
            log10_y: false,
            series,
            references,
        }
    }

    #[test]
    fn points_and_references_sit_at_their_values() {
        let c = chart(
            vec![Series {
                name: "symmetric".into(),
                points: vec![(16.0, 0.4), (32.0, 0.5), (64.0, 0.55)],
                line: true,
            }],
            vec![("dense".into(), 0.64)],
        );
        let svg = c.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Short labels keep the default canvas.
        assert_eq!(view_box(&svg), (720.0, 440.0));
        assert_eq!(svg.matches("<polyline").count(), 1);
        let p = circles(&svg);
        assert_eq!(p.len(), 3);
        // log₂ x: 16, 32, 64 equally spaced, left to right.
        let (dx1, dx2) = (p[1].0 - p[0].0, p[2].0 - p[1].0);
        assert!(dx1 > 100.0 && (dx1 - dx2).abs() <= 0.1, "{p:?}");
        // Linear y, up is larger: 0.4 → 0.5 is twice 0.5 → 0.55.
        let (dy1, dy2) = (p[0].1 - p[1].1, p[1].1 - p[2].1);
        assert!(dy2 > 0.0 && (dy1 - 2.0 * dy2).abs() <= 0.2, "{p:?}");
        // The reference line at 0.64 lies as far above 0.55 as 0.09 takes.
        let dense = svg.find("stroke-dasharray").unwrap();
        let line = svg[..dense].rfind("<line ").unwrap();
        let y = attr(&svg, line, "y1");
        assert!(
            (p[2].1 - y - 0.09 / 0.05 * dy2).abs() <= 0.2,
            "{y} vs {p:?}"
        );
        // The x ticks are the powers of two in range, then the axis labels; text is
        // escaped.
        let ticks: Vec<&str> = svg
            .match_indices("text-anchor=\"middle\">")
            .map(|(at, m)| {
                let from = at + m.len();
                &svg[from..from + svg[from..].find('<').unwrap()]
            })
            .collect();
        assert_eq!(ticks, ["16", "32", "64", "k", "NDCG@10"]);
        assert!(svg.contains(">NDCG@10 vs k &lt;test&gt;</text>"));
        let legend: Vec<String> = legend_labels(&svg).into_iter().map(|l| l.2).collect();
        assert_eq!(legend, ["dense", "symmetric"]);
    }

    #[test]
    fn legend_labels_lie_inside_the_view_box() {
        let names = [
            "h=3072 sup symmetric:4k".to_string(),
            "h=12288 sup reconstruction".into(),
            "sparse index, h=3072".into(),
            "W".repeat(40),
            "ü <é> & 😀 mixed".into(),
        ];
        let mut many: Vec<String> = names.to_vec();
        many.extend((0..30).map(|i| format!("series {i}")));
        for labels in [&names[..], &many[..]] {
            let series = labels
                .iter()
                .enumerate()
                .map(|(i, name)| Series {
                    name: name.clone(),
                    points: vec![(16.0, 0.1 * i as f64), (32.0, 0.2)],
                    line: true,
                })
                .collect();
            let refs = vec![("dense exact".into(), 0.3), ("HNSW".into(), 0.31)];
            let svg = chart(series, refs).svg();
            let (w, h) = view_box(&svg);
            let legend = legend_labels(&svg);
            assert_eq!(legend.len(), labels.len() + 2, "every row has its label");
            for (x, y, text) in &legend {
                let right = x + text_width(text, FONT);
                assert!(
                    right <= w,
                    "{text:?} ends at {right:.1} beyond the width {w}"
                );
                assert!(*y <= h - 4.0, "{text:?} at y {y} below the height {h}");
            }
        }
        // The estimate is not optimistic: rendered in DejaVu Sans at 12 px, this label's
        // ink ends 158 px right of its start.
        assert!(text_width("h=3072 sup symmetric:4k", FONT) >= 158.0);
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.12, 0.68);
        assert_eq!(t.len(), 5, "{t:?}");
        for (got, want) in t.iter().zip([0.2, 0.3, 0.4, 0.5, 0.6]) {
            assert!((got - want).abs() < 1e-9, "{t:?}");
        }
    }
}
