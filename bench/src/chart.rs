//! Latency vs offered load as a plain SVG: one colour per system, p99 as a
//! solid line, p50 dashed, the latency bound as a red rule. Log scale for
//! latency, linear for load.

use std::fmt::Write;

/// One system's points: (offered msg/s, p50 ms, p99 ms).
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points in increasing load.
    pub points: Vec<(f64, f64, f64)>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
];

/// The chart as SVG text.
pub fn latency_vs_load(title: &str, series: &[Series], bound_ms: f64) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let max_load = all.clone().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let lowest = all
        .clone()
        .flat_map(|p| [p.1, p.2])
        .filter(|v| *v > 0.0)
        .fold(bound_ms, f64::min);
    let highest = all.flat_map(|p| [p.1, p.2]).fold(bound_ms, f64::max);
    let y_min = 10f64.powf(lowest.log10().floor()).max(0.001);
    let y_max = 10f64.powf(highest.log10().ceil());
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |load: f64| LEFT + load / max_load * plot_w;
    let y = |ms: f64| {
        let ms = ms.max(y_min);
        TOP + plot_h - (ms.log10() - y_min.log10()) / (y_max.log10() - y_min.log10()) * plot_h
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Latency decades.
    let mut decade = y_min;
    while decade <= y_max * 1.0001 {
        let yy = y(decade);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            trim(decade)
        );
        decade *= 10.0;
    }
    // Load ticks.
    let step = nice_step(max_load / 6.0);
    let mut tick = 0.0;
    while tick <= max_load {
        let xx = x(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 16.0,
            trim(tick)
        );
        tick += step;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load (messages/s)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">send → receive latency (ms, log)</text>"#,
        TOP + plot_h / 2.0
    );
    let by = y(bound_ms);
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{by:.1}" x2="{:.1}" y2="{by:.1}" stroke="#d62728" stroke-dasharray="2 3"/><text x="{:.1}" y="{:.1}" fill="#d62728">p99 bound {} ms</text>"##,
        LEFT + plot_w,
        LEFT + 4.0,
        by - 4.0,
        trim(bound_ms)
    );

    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for (pick, dash, label) in [
            (2usize, "", "p99"),
            (1, r#" stroke-dasharray="6 4""#, "p50"),
        ] {
            let points: Vec<String> = s
                .points
                .iter()
                .map(|p| {
                    let v = if pick == 1 { p.1 } else { p.2 };
                    format!("{:.1},{:.1}", x(p.0), y(v))
                })
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
                points.join(" ")
            );
            for point in &points {
                let (px, py) = point.split_once(',').expect("x,y");
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{px}" cy="{py}" r="2.5" fill="{colour}"/>"#
                );
            }
            let ly = TOP + 14.0 + (i * 2 + usize::from(pick == 1)) as f64 * 18.0;
            let lx = LEFT + plot_w + 14.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{ly:.1}">{} {label}</text>"#,
                ly - 4.0,
                lx + 24.0,
                ly - 4.0,
                lx + 30.0,
                escape(&s.name)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.max(1e-9).log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn trim(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_series_and_the_bound() {
        let svg = latency_vs_load(
            "sweep <test>",
            &[
                Series {
                    name: "floor".into(),
                    points: vec![(500.0, 0.3, 0.9), (1000.0, 0.4, 1.5)],
                },
                Series {
                    name: "turbochat-1n1r".into(),
                    points: vec![(500.0, 1.0, 4.0), (1000.0, 2.0, 150.0)],
                },
            ],
            100.0,
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("p99 bound 100 ms"));
        assert!(svg.contains("sweep &lt;test&gt;"));
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(170.0), 200.0);
        assert_eq!(nice_step(1000.0), 1000.0);
        assert_eq!(nice_step(3100.0), 5000.0);
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(trim(0.0), "0");
        assert_eq!(trim(0.01), "0.01");
        assert_eq!(trim(5000.0), "5000");
    }
}
