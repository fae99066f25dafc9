//! Small SVG line charts: delivery over time and the latency CDF, with no dependencies.

use crate::engine::Outcome;
use std::fmt::Write as _;

/// One series: points in data units.
pub struct Series {
    /// Legend.
    pub name: String,
    /// (x, y) points, x ascending.
    pub points: Vec<(f64, f64)>,
}

fn nice(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= max {
            return m * mag;
        }
    }
    10.0 * mag
}

/// An SVG line chart of `series`.
pub fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 400.0, 70.0, 50.0, 40.0, 20.0);
    let xmax = nice(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(0.0, f64::max),
    );
    let ymax = nice(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let px = |x: f64| left + (w - left - right) * x / xmax;
    let py = |y: f64| h - bottom - (h - bottom - top) * y / ymax;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n",
        w / 2.0
    );
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=5 {
        let fx = f64::from(i) * xmax / 5.0;
        let fy = f64::from(i) * ymax / 5.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
            px(fx),
            h - bottom + 18.0,
            fmt(fx),
            left - 6.0,
            py(fy) + 4.0,
            fmt(fy),
            py(fy),
            w - right,
            py(fy)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x_label}</text><text transform=\"translate(16,{:.1}) rotate(-90)\" text-anchor=\"middle\">{y_label}</text>",
        (left + w - right) / 2.0,
        h - 10.0,
        (top + h - bottom) / 2.0
    );
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    for (k, se) in series.iter().enumerate() {
        let c = colours[k % colours.len()];
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        // Legend entries, top left, one per line.
        let ly = top + 16.0 + 16.0 * f64::from(u32::try_from(k).unwrap_or(0));
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{ly:.1}\" x2=\"{}\" y2=\"{ly:.1}\" stroke=\"{c}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{:.1}\">{}</text>",
            left + 10.0,
            left + 30.0,
            left + 36.0,
            ly + 4.0,
            se.name
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Fraction of created messages delivered, over simulated hours.
// Message counts and times are exact in f64.
#[allow(clippy::cast_precision_loss)]
pub fn delivery_over_time(o: &Outcome, name: &str) -> Series {
    let total = o.messages.len().max(1) as f64;
    let mut t: Vec<u64> = o.messages.iter().filter_map(|m| m.delivered_ms).collect();
    t.sort_unstable();
    let mut points = vec![(0.0, 0.0)];
    for (i, ms) in t.iter().enumerate() {
        points.push((*ms as f64 / 3_600_000.0, (i + 1) as f64 / total));
    }
    points.push((o.duration_ms as f64 / 3_600_000.0, t.len() as f64 / total));
    Series {
        name: name.to_owned(),
        points,
    }
}

/// The empirical CDF of delivery latency, in minutes.
// Message counts and times are exact in f64.
#[allow(clippy::cast_precision_loss)]
pub fn latency_cdf(o: &Outcome, name: &str) -> Series {
    let mut l: Vec<f64> = o
        .messages
        .iter()
        .filter_map(|m| m.delivered_ms.map(|d| (d - m.created_ms) as f64 / 60_000.0))
        .collect();
    l.sort_by(f64::total_cmp);
    let n = l.len().max(1) as f64;
    let mut points = vec![(0.0, 0.0)];
    for (i, x) in l.iter().enumerate() {
        points.push((*x, (i + 1) as f64 / n));
    }
    Series {
        name: name.to_owned(),
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_one_line_per_series_and_nice_axes() {
        let s = chart(
            "t",
            "x",
            "y",
            &[
                Series {
                    name: "a".into(),
                    points: vec![(0.0, 0.0), (3.2, 0.7)],
                },
                Series {
                    name: "b".into(),
                    points: vec![(0.0, 0.1), (1.0, 0.9)],
                },
            ],
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(
            s.contains(">5.00<") || s.contains(">5<"),
            "x axis ends at a round 5: {s}"
        );
        assert!((nice(0.93) - 1.0).abs() < 1e-12 && (nice(1234.0) - 2000.0).abs() < 1e-9);
    }
}
