//! A small SVG plot of accuracy against cost: one polyline per curve, a point per single
//! model, the chosen point marked. Pure string building, no dependencies.

use std::fmt::Write;

pub struct Series {
    pub label: String,
    /// (cost, accuracy) pairs, in cost order.
    pub points: Vec<(f64, f64)>,
    /// An SVG colour, and a `stroke-dasharray` ("" for a solid line).
    pub colour: &'static str,
    pub dash: &'static str,
}

pub struct Marker {
    pub label: String,
    pub cost: f64,
    pub accuracy: f64,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Renders the plot. `x_label` names the cost axis (e.g. "M MACs per input").
pub fn svg(title: &str, x_label: &str, series: &[Series], singles: &[Marker], chosen: Option<&Marker>) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 560.0, 70.0, 300.0, 40.0, 60.0);
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).chain(singles.iter().map(|m| m.cost));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).chain(singles.iter().map(|m| m.accuracy));
    let (mut x0, mut x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (mut y0, mut y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (dx, dy) = (((x1 - x0) * 0.05).max(1e-9), ((y1 - y0) * 0.08).max(1e-3));
    (x0, x1, y0, y1) = (x0 - dx, x1 + dx, y0 - dy, y1 + dy);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" font-size="15">{}</text>
"#,
        left,
        esc(title)
    );
    // Axes with five ticks each.
    let _ = writeln!(
        s,
        r#"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        w - left - right,
        h - top - bottom
    );
    for i in 0..=4 {
        let fx = x0 + (x1 - x0) * i as f64 / 4.0;
        let fy = y0 + (y1 - y0) * i as f64 / 4.0;
        let _ =
            writeln!(s, r#"<text x="{:.1}" y="{}" text-anchor="middle">{:.0}</text>"#, px(fx), h - bottom + 18.0, fx);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{:.1}%</text>"#,
            left - 6.0,
            py(fy) + 4.0,
            fy * 100.0
        );
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            w - right,
            py(fy),
            py(fy)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
        (left + w - right) / 2.0,
        h - 18.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">top-1 accuracy</text>"#,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let (c, d) = (se.colour, se.dash);
        let pts: Vec<String> = se.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-dasharray="{d}" stroke-width="1.5"/>"#,
            pts.join(" ")
        );
        let ly = top + 14.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-dasharray="{d}" stroke-width="2.5"/>"#,
            w - right + 12.0,
            w - right + 40.0
        );
        let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, w - right + 46.0, ly + 4.0, esc(&se.label));
    }
    for m in singles {
        let (x, y) = (px(m.cost), py(m.accuracy));
        let _ = writeln!(s, r#"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="black"/>"#, x - 4.0, y - 4.0);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, x + 7.0, y - 6.0, esc(&m.label));
    }
    if let Some(m) = chosen {
        let (x, y) = (px(m.cost), py(m.accuracy));
        let _ = writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="7" fill="none" stroke="red" stroke-width="2.5"/>"#);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" fill="red">{}</text>"#, x + 9.0, y + 16.0, esc(&m.label));
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_series_model_and_the_choice() {
        let series = vec![Series {
            label: "max-softmax".into(),
            points: vec![(400.0, 0.8), (600.0, 0.85)],
            colour: "blue",
            dash: "",
        }];
        let singles = vec![Marker { label: "big <fp32>".into(), cost: 900.0, accuracy: 0.84 }];
        let chosen = Marker { label: "chosen".into(), cost: 600.0, accuracy: 0.85 };
        let out = svg("t", "M MACs", &series, &singles, Some(&chosen));
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"));
        assert_eq!(out.matches("<polyline").count(), 1);
        assert!(out.contains("big &lt;fp32&gt;") && out.contains("<circle"));
    }
}
