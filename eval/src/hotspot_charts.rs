//! Hotspot charts (SVG, drawn like `charts`): heat over time per hotspot, and the hotspots on a
//! district × category grid.

use crate::charts::{escape, legend, open, COLORS};
use std::collections::BTreeMap;
use std::fmt::Write;
use triage_core::hotspots::{heat, HeatParams, Hotspot};

fn short(s: &str, chars: usize) -> String {
    let mut out: String = s.chars().take(chars).collect();
    if s.chars().count() > chars {
        out.push('…');
    }
    out
}

fn month_label(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map_or_else(String::new, |d| d.format("%Y-%m").to_string())
}

/// Heat of each of the first `k` hotspots as its messages arrive (the heat of the messages so far,
/// by the same formula as the ranking), as step lines over a shared time axis.
pub fn heat_over_time(hotspots: &[Hotspot], k: usize, params: &HeatParams) -> String {
    let shown: Vec<&Hotspot> = hotspots
        .iter()
        .filter(|h| !h.timeline.is_empty())
        .take(k)
        .collect();
    let (left, top, w, h) = (60u32, 40u32, 560u32, 320u32);
    let mut svg = open(
        left + w + 300,
        top + h + 70,
        "Heat over time (top hotspots)",
    );
    let t0 = shown.iter().map(|h| h.timeline[0].0).min().unwrap_or(0);
    let t1 = shown
        .iter()
        .map(|h| h.timeline[h.timeline.len() - 1].0)
        .max()
        .unwrap_or(t0 + 1)
        .max(t0 + 1);
    let series: Vec<Vec<(i64, f64)>> = shown
        .iter()
        .map(|hs| {
            (1..=hs.timeline.len())
                .map(|i| {
                    let prefix: Vec<(Option<i64>, u64)> = hs.timeline[..i]
                        .iter()
                        .map(|&(t, l)| (Some(t), l))
                        .collect();
                    (hs.timeline[i - 1].0, heat(&prefix, params).0)
                })
                .collect()
        })
        .collect();
    let y_max = series.iter().flatten().map(|p| p.1).fold(1.0f64, f64::max) * 1.05;
    let _ = writeln!(
        svg,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#333\"/>"
    );
    for k in 0..=5 {
        let f = k as f64 / 5.0;
        let y = top as f64 + h as f64 - f * h as f64;
        let x = left as f64 + f * w as f64;
        let t = t0 + ((t1 - t0) as f64 * f) as i64;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eee\"/>",
            left + w
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}</text>",
            left - 6,
            y + 4.0,
            f * y_max
        );
        let _ = writeln!(
            svg,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            top + h + 16,
            month_label(t)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">time of each distinct message</text>",
        left + w / 2,
        top + h + 40
    );
    let _ = writeln!(svg, "<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">heat so far</text>", top + h / 2, top + h / 2);
    let px = |t: i64| left as f64 + (t - t0) as f64 / (t1 - t0) as f64 * w as f64;
    let py = |v: f64| (top + h) as f64 - v / y_max * h as f64;
    for (i, (hs, points)) in shown.iter().zip(&series).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let dash = if i >= COLORS.len() {
            " stroke-dasharray=\"5 3\""
        } else {
            ""
        };
        let mut path = format!("{:.1},{:.1}", px(points[0].0), py(0.0));
        let mut last = 0.0;
        for &(t, v) in points {
            let _ = write!(
                path,
                " {:.1},{:.1} {:.1},{:.1}",
                px(t),
                py(last),
                px(t),
                py(v)
            );
            last = v;
        }
        let _ = write!(path, " {:.1},{:.1}", px(t1), py(last));
        let _ = writeln!(
            svg,
            "<polyline points=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash}><title>{}</title></polyline>",
            escape(&hs.title)
        );
        legend(
            &mut svg,
            left + w + 16,
            top + 10 + 18 * i as u32,
            color,
            &format!("#{} {} ({:.0})", hs.rank, short(&hs.title, 16), hs.heat),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Hotspots on a district × category grid: a circle per cell, its area the cell's total heat,
/// labelled with how many hotspots it holds and the best rank among them.
pub fn district_category_grid(hotspots: &[Hotspot]) -> String {
    const NONE: &str = "(none)";
    let mut cells: BTreeMap<(String, String), (f64, usize, usize)> = BTreeMap::new();
    let mut row_heat: BTreeMap<String, f64> = BTreeMap::new();
    let mut col_heat: BTreeMap<String, f64> = BTreeMap::new();
    for h in hotspots {
        let d = h.district.clone().unwrap_or_else(|| NONE.into());
        let c = h.category.clone().unwrap_or_else(|| NONE.into());
        let e = cells
            .entry((d.clone(), c.clone()))
            .or_insert((0.0, 0, usize::MAX));
        e.0 += h.heat;
        e.1 += 1;
        e.2 = e.2.min(h.rank);
        *row_heat.entry(d).or_default() += h.heat;
        *col_heat.entry(c).or_default() += h.heat;
    }
    let order = |m: &BTreeMap<String, f64>| {
        let mut v: Vec<(String, f64)> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(k, _)| k).collect::<Vec<_>>()
    };
    let (rows, cols) = (order(&row_heat), order(&col_heat));
    let cell = 56u32;
    let (left, top) = (110u32, 150u32);
    let mut svg = open(
        left + cell * cols.len().max(1) as u32 + 40,
        top + cell * rows.len().max(1) as u32 + 50,
        "Hotspots by district × category (area = total heat; n, best rank)",
    );
    let max_heat = cells.values().map(|c| c.0).fold(1e-9, f64::max);
    for (j, c) in cols.iter().enumerate() {
        let x = left + j as u32 * cell + cell / 2;
        let _ = writeln!(svg, "<text x=\"{x}\" y=\"{}\" transform=\"rotate(-45 {x} {})\" text-anchor=\"start\">{}</text>", top - 8, top - 8, escape(&short(c, 10)));
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + i as u32 * cell;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 6,
            y + cell / 2 + 4,
            escape(r)
        );
        for (j, c) in cols.iter().enumerate() {
            let x = left + j as u32 * cell;
            let _ = writeln!(svg, "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"none\" stroke=\"#eee\"/>");
            if let Some(&(heat, n, best)) = cells.get(&(r.clone(), c.clone())) {
                let radius = (heat / max_heat).sqrt() * (cell as f64 / 2.0 - 3.0);
                let _ = writeln!(
                    svg,
                    "<circle cx=\"{}\" cy=\"{}\" r=\"{radius:.1}\" fill=\"{}\" fill-opacity=\"0.55\"><title>{} · {}: {n} hotspots, heat {heat:.1}</title></circle>",
                    x + cell / 2,
                    y + cell / 2,
                    COLORS[0],
                    escape(r),
                    escape(c)
                );
                let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{n}, #{best}</text>", x + cell / 2, y + cell - 4);
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// A digest's counts: one pair of bars per row (this period, the one before), largest first.
pub fn period_bars(title: &str, rows: &[(String, usize, usize)]) -> String {
    let rows: Vec<&(String, usize, usize)> = rows.iter().take(20).collect();
    let (left, top, bar_h, gap) = (150u32, 50u32, 9u32, 8u32);
    let w = 420u32;
    let h = rows.len().max(1) as u32 * (2 * bar_h + gap);
    let mut svg = open(left + w + 190, top + h + 30, title);
    let max = rows.iter().map(|r| r.1.max(r.2)).max().unwrap_or(1).max(1) as f64;
    for (i, (name, now, before)) in rows.iter().enumerate() {
        let y = top + i as u32 * (2 * bar_h + gap);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 6,
            y + bar_h + 4,
            escape(&short(name, 12))
        );
        for (k, (value, color)) in [(now, COLORS[0]), (before, "#adb5bd")].iter().enumerate() {
            let len = (**value as f64 / max * w as f64) as u32;
            let yk = y + k as u32 * bar_h;
            let _ = writeln!(
                svg,
                "<rect x=\"{left}\" y=\"{yk}\" width=\"{len}\" height=\"{}\" fill=\"{color}\"/>",
                bar_h - 1
            );
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" font-size=\"10\">{value}</text>",
                left + len + 4,
                yk + bar_h - 1
            );
        }
    }
    legend(&mut svg, left + w + 40, top + 10, COLORS[0], "this period");
    legend(
        &mut svg,
        left + w + 40,
        top + 28,
        "#adb5bd",
        "the period before",
    );
    svg.push_str("</svg>\n");
    svg
}
