//! SVG charts written by hand: no chart library, valid XML, labels escaped, CJK-capable fonts.

use crate::report::{MethodMetrics, Report};
use std::fmt::Write;

const FONT: &str = "Noto Sans CJK SC, Microsoft YaHei, PingFang SC, sans-serif";

/// Text for XML content or a double-quoted attribute. Control characters XML 1.0 forbids are
/// dropped (a label holding one would otherwise make the whole chart unreadable).
pub fn escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) fn open(width: u32, height: u32, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"{FONT}\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        width / 2,
        escape(title)
    )
}

/// Rows are gold labels, columns predictions; cells shaded by the share of their row.
pub fn confusion_heatmap(report: &Report) -> String {
    let c = &report.confusion;
    let n = c.labels.len().max(1);
    let cell = (480 / n).clamp(24, 64) as u32;
    let left = 130u32;
    let top = 140u32;
    let size = cell * n as u32;
    let mut svg = open(
        left + size + 40,
        top + size + 60,
        &format!("Confusion matrix ({})", report.method),
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">predicted</text>",
        left + size / 2,
        top - 88
    );
    let _ = writeln!(svg, "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">gold</text>", top + size / 2, top + size / 2);
    for (i, label) in c.labels.iter().enumerate() {
        let y = top + i as u32 * cell + cell / 2 + 4;
        let x = left + i as u32 * cell + cell / 2;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{y}\" text-anchor=\"end\">{}</text>",
            left - 6,
            escape(label)
        );
        let _ = writeln!(svg, "<text x=\"{x}\" y=\"{}\" transform=\"rotate(-45 {x} {})\" text-anchor=\"start\">{}</text>", top - 8, top - 8, escape(label));
    }
    for (i, row) in c.matrix.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (j, count) in row.iter().enumerate() {
            let share = *count as f64 / total.max(1) as f64;
            let (x, y) = (left + j as u32 * cell, top + i as u32 * cell);
            let shade = (255.0 - share * 200.0) as u8;
            let fill = if i == j {
                format!(
                    "rgb({shade},{},{shade})",
                    255 - ((255 - shade as u32) / 3) as u8
                )
            } else {
                format!("rgb(255,{shade},{shade})")
            };
            let ink = if share > 0.55 { "white" } else { "black" };
            let _ = writeln!(svg, "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"{fill}\" stroke=\"#ddd\"/>");
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{ink}\">{count}</text>",
                x + cell / 2,
                y + cell / 2 + 4
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn axes(svg: &mut String, left: u32, top: u32, w: u32, h: u32, x_label: &str, y_label: &str) {
    let _ = writeln!(svg, "<rect x=\"{left}\" y=\"{top}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#333\"/>");
    for k in 0..=10 {
        let f = k as f64 / 10.0;
        let x = left as f64 + f * w as f64;
        let y = top as f64 + h as f64 - f * h as f64;
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#eee\"/>",
            top,
            top + h
        );
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eee\"/>",
            left + w
        );
        let _ = writeln!(
            svg,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{f:.1}</text>",
            top + h + 16
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{f:.1}</text>",
            left - 6,
            y + 4.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        left + w / 2,
        top + h + 36,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        "<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>",
        top + h / 2,
        top + h / 2,
        escape(y_label)
    );
}

pub(crate) const COLORS: [&str; 6] = [
    "#0b5fff", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#495057",
];

/// Accuracy against mean confidence per bin, with the diagonal of perfect calibration.
pub fn reliability_diagram(report: &Report) -> String {
    let (left, top, w, h) = (60u32, 40u32, 420u32, 420u32);
    let mut svg = open(left + w + 200, top + h + 60, "Reliability diagram");
    axes(&mut svg, left, top, w, h, "confidence", "accuracy");
    let _ = writeln!(svg, "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{top}\" stroke=\"#999\" stroke-dasharray=\"4 4\"/>", top + h, left + w);
    let frame = Frame { left, top, w, h };
    for (k, (name, m)) in report.methods.iter().enumerate() {
        let points = m
            .reliability
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.mean_confidence, b.accuracy));
        frame.series(&mut svg, k, points, &format!("{name} (ECE {:.3})", m.ece));
    }
    svg.push_str("</svg>\n");
    svg
}

/// The plotting area of a line chart, in pixels.
struct Frame {
    left: u32,
    top: u32,
    w: u32,
    h: u32,
}

impl Frame {
    /// Method `k`'s line through (x, y) points in [0, 1]², with its legend entry.
    fn series(
        &self,
        svg: &mut String,
        k: usize,
        points: impl Iterator<Item = (f64, f64)>,
        label: &str,
    ) {
        let color = COLORS[k % COLORS.len()];
        let points: Vec<String> = points
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    self.left as f64 + x * self.w as f64,
                    (self.top + self.h) as f64 - y * self.h as f64
                )
            })
            .collect();
        let _ = writeln!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
            points.join(" ")
        );
        legend(
            svg,
            self.left + self.w + 16,
            self.top + 10 + 18 * k as u32,
            color,
            label,
        );
    }
}

pub(crate) fn legend(svg: &mut String, x: u32, y: u32, color: &str, text: &str) {
    let _ = writeln!(
        svg,
        "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/>",
        y - 10
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{y}\">{}</text>",
        x + 18,
        escape(text)
    );
}

/// Accuracy of the auto-routed share as the confidence threshold is lowered.
pub fn coverage_curve(report: &Report) -> String {
    let (left, top, w, h) = (60u32, 40u32, 420u32, 420u32);
    let mut svg = open(left + w + 200, top + h + 60, "Coverage vs accuracy");
    axes(
        &mut svg,
        left,
        top,
        w,
        h,
        "coverage (share auto-routed)",
        "accuracy of routed cases",
    );
    let frame = Frame { left, top, w, h };
    for (k, (name, m)) in report.methods.iter().enumerate() {
        frame.series(&mut svg, k, m.coverage_curve.iter().copied(), name);
    }
    svg.push_str("</svg>\n");
    svg
}

/// F1 per class, one bar per method.
pub fn f1_bars(report: &Report) -> String {
    let classes: Vec<&String> = report.per_class.keys().collect();
    let methods: Vec<(&String, &MethodMetrics)> = report.methods.iter().collect();
    let group = (methods.len() as u32 * 14 + 10).max(30);
    let (left, top, h) = (50u32, 40u32, 300u32);
    let w = group * classes.len().max(1) as u32;
    let mut svg = open(left + w + 220, top + h + 110, "F1 per class");
    for k in 0..=10 {
        let y = top + h - k * h / 10;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#eee\"/>",
            left + w
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.1}</text>",
            left - 6,
            y + 4,
            k as f64 / 10.0
        );
    }
    for (i, class) in classes.iter().enumerate() {
        let x0 = left + i as u32 * group + 5;
        for (k, (_, m)) in methods.iter().enumerate() {
            let f1 = m.per_class.get(*class).map_or(0.0, |c| c.f1);
            let bar = (f1 * h as f64) as u32;
            let _ = writeln!(svg, "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"{bar}\" fill=\"{}\"><title>{} {}: {f1:.3}</title></rect>", x0 + k as u32 * 14, top + h - bar, COLORS[k % COLORS.len()], escape(class), escape(methods[k].0));
        }
        let x = x0 + group / 2;
        let _ = writeln!(
            svg,
            "<text x=\"{x}\" y=\"{}\" transform=\"rotate(40 {x} {})\">{}</text>",
            top + h + 14,
            top + h + 14,
            escape(class)
        );
    }
    for (k, (name, _)) in methods.iter().enumerate() {
        legend(
            &mut svg,
            left + w + 16,
            top + 10 + 18 * k as u32,
            COLORS[k % COLORS.len()],
            name,
        );
    }
    svg.push_str("</svg>\n");
    svg
}
