//! The soak's chart: stacked panels of time series over minutes, written as plain SVG
//! 1.1 text (no dependency), which any browser shows.

use std::fmt::Write as _;

/// One line of a panel: its name and its points (minutes, value).
pub struct Series {
    /// Shown in the panel's legend.
    pub label: String,
    /// A CSS colour.
    pub colour: &'static str,
    /// (minutes, value), in time order.
    pub points: Vec<(f64, f64)>,
}

/// One panel: a y axis from 0 and the lines drawn on it.
pub struct Panel {
    /// The y axis' title, with its unit.
    pub title: String,
    /// Its lines.
    pub series: Vec<Series>,
}

/// A chart: a title, panels stacked over a common time axis, and vertical marks.
pub struct Chart {
    /// The first line of the title.
    pub title: String,
    /// A second, smaller line.
    pub subtitle: String,
    /// The panels, top to bottom.
    pub panels: Vec<Panel>,
    /// The time axis runs from 0 to this many minutes.
    pub minutes: f64,
    /// Minutes at which a dashed vertical line is drawn on every panel.
    pub marks: Vec<f64>,
    /// What the marks mean, under the title.
    pub marks_label: String,
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 90.0;
const PANEL: f64 = 170.0;
const GAP: f64 = 60.0;

/// The chart as an SVG document.
pub fn render(chart: &Chart) -> String {
    let height = TOP + chart.panels.len() as f64 * (PANEL + GAP) + 10.0;
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="28" font-size="17" font-weight="bold">{}</text>"#,
        escape(&chart.title)
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="50" fill="#444">{}</text>"##,
        escape(&chart.subtitle)
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="68" fill="#777">{}</text>"##,
        escape(&chart.marks_label)
    );
    let x_ticks = ticks(chart.minutes.max(1e-9), 10);
    let last_point = chart
        .panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)))
        .fold(0.0_f64, f64::max);
    let x_max = x_ticks
        .last()
        .copied()
        .unwrap_or(1.0)
        .max(chart.minutes)
        .max(last_point);
    for (i, panel) in chart.panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL + GAP);
        render_panel(&mut out, chart, panel, top, &x_ticks, x_max);
    }
    out.push_str("</svg>\n");
    out
}

fn render_panel(
    out: &mut String,
    chart: &Chart,
    panel: &Panel,
    top: f64,
    x_ticks: &[f64],
    x_max: f64,
) {
    let plot_width = WIDTH - LEFT - RIGHT;
    let bottom = top + PANEL;
    let high = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let y_ticks = ticks(if high > 0.0 { high } else { 1.0 }, 5);
    let y_max = y_ticks.last().copied().unwrap_or(1.0).max(high);
    let x = |m: f64| LEFT + m / x_max * plot_width;
    let y = |v: f64| bottom - v / y_max * PANEL;
    let _ = writeln!(out, "<g>");
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>"#,
        top - 8.0,
        escape(&panel.title)
    );
    for &v in &y_ticks {
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#e4e4e4"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            y(v),
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            label(v)
        );
    }
    for &m in x_ticks {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{bottom:.1}" x2="{0:.1}" y2="{1:.1}" stroke="#444"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{3}</text>"##,
            x(m),
            bottom + 4.0,
            bottom + 17.0,
            label(m)
        );
    }
    for &m in &chart.marks {
        if m <= x_max {
            let _ = writeln!(
                out,
                r##"<line x1="{0:.1}" y1="{top:.1}" x2="{0:.1}" y2="{bottom:.1}" stroke="#999" stroke-dasharray="4 4"/>"##,
                x(m)
            );
        }
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top:.1}" width="{plot_width:.1}" height="{PANEL}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">minutes</text>"##,
        LEFT + plot_width / 2.0,
        bottom + 32.0
    );
    for (k, series) in panel.series.iter().enumerate() {
        let points: Vec<String> = series
            .points
            .iter()
            .map(|&(m, v)| format!("{:.1},{:.1}", x(m), y(v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"/>"#,
            series.colour,
            points.join(" ")
        );
        // The legend: on the panel's title line, right-aligned, one entry a series.
        let legend_x = WIDTH - RIGHT - legend_width(&panel.series[k..]);
        let legend_y = top - 12.0;
        let _ = writeln!(
            out,
            r#"<line x1="{legend_x:.1}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="{2}" stroke-width="3"/><text x="{3:.1}" y="{4:.1}">{5}</text>"#,
            legend_y,
            legend_x + 18.0,
            series.colour,
            legend_x + 24.0,
            legend_y + 4.0,
            escape(&series.label)
        );
    }
    let _ = writeln!(out, "</g>");
}

/// The width the legend entries of `series` take (about 7 px a character).
fn legend_width(series: &[Series]) -> f64 {
    series
        .iter()
        .map(|s| 24.0 + 7.0 * s.label.chars().count() as f64 + 16.0)
        .sum()
}

/// Tick values from 0 to at least `high`, about `about` of them, a step of 1, 2 or 5
/// times a power of ten.
pub fn ticks(high: f64, about: usize) -> Vec<f64> {
    let step = nice_step(high / about.max(1) as f64);
    let count = (high / step).ceil().max(1.0) as usize;
    (0..=count).map(|i| i as f64 * step).collect()
}

/// The smallest 1, 2 or 5 × 10^k at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// A tick's label: no more decimals than it needs.
fn label(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `text` with XML's special characters escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let labels = |high: f64, about: usize| -> Vec<String> {
            ticks(high, about).into_iter().map(label).collect()
        };
        assert_eq!(labels(30.0, 10), ["0", "5", "10", "15", "20", "25", "30"]);
        assert_eq!(labels(3.0, 10), ["0", "0.5", "1", "1.5", "2", "2.5", "3"]);
        assert_eq!(labels(87.0, 5), ["0", "20", "40", "60", "80", "100"]);
        assert_eq!(labels(1.0, 5), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(labels(0.0, 5), ["0", "1"]);
        assert_eq!(nice_step(0.0), 1.0);
    }

    #[test]
    fn the_chart_is_svg_with_escaped_text() {
        let chart = Chart {
            title: "soak <SQLite> & more".into(),
            subtitle: "1 min".into(),
            panels: vec![Panel {
                title: "RSS (MiB)".into(),
                series: vec![Series {
                    label: "RSS".into(),
                    colour: "#1f77b4",
                    points: vec![(0.0, 10.0), (0.5, 12.0), (1.0, 11.0)],
                }],
            }],
            minutes: 1.0,
            marks: vec![0.0, 5.0],
            marks_label: "purges".into(),
        };
        let svg = render(&chart);
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
        assert!(svg.contains("soak &lt;SQLite&gt; &amp; more"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.trim_end().ends_with("</svg>"));
        // The mark past the axis is left out.
        assert_eq!(svg.matches("stroke-dasharray").count(), 1);
    }
}
