//! Hotspot evaluation against a hand-checked gold, the baseline it is compared with, and the
//! hotspot charts.
//!
//! Scoring of the top `k` hotspots by heat: each hotspot's best gold cluster is the one holding
//! most of its ids; *purity* is that share of its ids, *recall* the share of the gold cluster's
//! ids it holds. A hotspot *matches* when most of its ids (purity > 0.5) are one gold cluster that
//! no higher-ranked hotspot matched already (a split cluster counts once). A hotspot is a *broad
//! theme* when it holds two or more example ids of one of the broad themes.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use triage_core::hotspots::{heat, HeatParams, Hotspot};
use triage_core::text::{markdown_cell, truncate_chars};
use triage_core::Case;

/// A gold cluster (`hotspots-gold.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoldCluster {
    pub cluster: String,
    pub title: String,
    pub ids: Vec<String>,
    #[serde(default)]
    pub n_distinct: Option<usize>,
    #[serde(default)]
    pub likes: Option<u64>,
}

/// A theme that must not be a hotspot (`hotspots-broad-themes.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BroadTheme {
    pub theme: String,
    pub title: String,
    pub example_ids: Vec<String>,
}

/// One ranked hotspot against the gold.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub rank: usize,
    pub title: String,
    pub n: usize,
    pub heat: f64,
    pub gold: Option<String>,
    pub gold_title: Option<String>,
    pub purity: f64,
    pub recall: f64,
    pub matched: bool,
    pub broad_theme: Option<String>,
}

/// Rank at which one of the gold's leading clusters was found (None: not in the ranking).
#[derive(Debug, Clone, Serialize)]
pub struct Leader {
    pub cluster: String,
    pub title: String,
    pub n_distinct: usize,
    pub likes: u64,
    pub rank: Option<usize>,
}

/// The evaluation of one method's ranking.
#[derive(Debug, Clone, Serialize)]
pub struct GoldReport {
    pub method: String,
    pub k: usize,
    pub top: Vec<Scored>,
    pub matched: usize,
    pub mean_purity: f64,
    pub mean_recall_of_matched: f64,
    pub broad_in_top: usize,
    /// The three gold clusters with most distinct messages, and where they rank.
    pub leaders_by_messages: Vec<Leader>,
    /// The three with most likes.
    pub leaders_by_support: Vec<Leader>,
    /// Whether all of both leader lists rank within the top 5.
    pub leaders_in_top5: bool,
}

/// Scores the first `k` of `ranking` (already ordered by heat).
pub fn score(
    method: &str,
    ranking: &[Hotspot],
    gold: &[GoldCluster],
    broad: &[BroadTheme],
    k: usize,
) -> GoldReport {
    let gold_of: HashMap<&str, usize> = gold
        .iter()
        .enumerate()
        .flat_map(|(g, c)| c.ids.iter().map(move |id| (id.as_str(), g)))
        .collect();
    let mut claimed: HashSet<usize> = HashSet::new();
    let mut top = Vec::new();
    // Where each gold cluster is first matched, over the whole ranking (for the leaders).
    let mut first_rank: HashMap<usize, usize> = HashMap::new();
    for (i, h) in ranking.iter().enumerate() {
        let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
        for id in &h.ids {
            if let Some(&g) = gold_of.get(id.as_str()) {
                *counts.entry(g).or_insert(0) += 1;
            }
        }
        let best = counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(&g, &n)| (g, n));
        let purity = best.map_or(0.0, |(_, n)| n as f64 / h.ids.len().max(1) as f64);
        let recall = best.map_or(0.0, |(g, n)| n as f64 / gold[g].ids.len().max(1) as f64);
        let matched = best.is_some_and(|(g, _)| purity > 0.5 && !claimed.contains(&g));
        if let (true, Some((g, _))) = (matched, best) {
            claimed.insert(g);
            first_rank.entry(g).or_insert(i + 1);
        }
        if i < k {
            let ids: HashSet<&str> = h.ids.iter().map(String::as_str).collect();
            let broad_theme = broad
                .iter()
                .find(|b| {
                    b.example_ids
                        .iter()
                        .filter(|id| ids.contains(id.as_str()))
                        .count()
                        >= 2
                })
                .map(|b| b.theme.clone());
            top.push(Scored {
                rank: i + 1,
                title: h.title.clone(),
                n: h.n,
                heat: h.heat,
                gold: best.map(|(g, _)| gold[g].cluster.clone()),
                gold_title: best.map(|(g, _)| gold[g].title.clone()),
                purity,
                recall,
                matched,
                broad_theme,
            });
        }
    }
    let leaders = |key: &dyn Fn(&GoldCluster) -> u64| -> Vec<Leader> {
        let mut order: Vec<usize> = (0..gold.len()).collect();
        order.sort_by(|&a, &b| key(&gold[b]).cmp(&key(&gold[a])).then(a.cmp(&b)));
        order
            .into_iter()
            .take(3)
            .map(|g| Leader {
                cluster: gold[g].cluster.clone(),
                title: gold[g].title.clone(),
                n_distinct: gold[g].n_distinct.unwrap_or(gold[g].ids.len()),
                likes: gold[g].likes.unwrap_or(0),
                rank: first_rank.get(&g).copied(),
            })
            .collect()
    };
    let leaders_by_messages = leaders(&|c| c.n_distinct.unwrap_or(c.ids.len()) as u64);
    let leaders_by_support = leaders(&|c| c.likes.unwrap_or(0));
    let leaders_in_top5 = leaders_by_messages
        .iter()
        .chain(&leaders_by_support)
        .all(|l| l.rank.is_some_and(|r| r <= 5));
    let n = top.len().max(1) as f64;
    let matched: Vec<&Scored> = top.iter().filter(|s| s.matched).collect();
    GoldReport {
        method: method.to_string(),
        k,
        matched: matched.len(),
        mean_purity: top.iter().map(|s| s.purity).sum::<f64>() / n,
        mean_recall_of_matched: matched.iter().map(|s| s.recall).sum::<f64>()
            / matched.len().max(1) as f64,
        broad_in_top: top.iter().filter(|s| s.broad_theme.is_some()).count(),
        top,
        leaders_by_messages,
        leaders_by_support,
        leaders_in_top5,
    }
}

/// Markdown: a summary line per method, then each method's top `k`.
pub fn markdown(reports: &[GoldReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Hotspots against the gold\n");
    let _ = writeln!(
        out,
        "| method | top k | matched | mean purity | mean recall (matched) | broad themes in top k | leaders in top 5 |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|");
    for r in reports {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} | {:.3} | {} | {} |",
            r.method,
            r.k,
            r.matched,
            r.mean_purity,
            r.mean_recall_of_matched,
            r.broad_in_top,
            if r.leaders_in_top5 { "yes" } else { "no" }
        );
    }
    for r in reports {
        let _ = writeln!(out, "\n## {}\n", r.method);
        let _ = writeln!(
            out,
            "| rank | title | n | heat | gold | purity | recall | match | broad |"
        );
        let _ = writeln!(out, "|---:|---|---:|---:|---|---:|---:|---|---|");
        for s in &r.top {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} | {:.2} | {:.2} | {} | {} |",
                s.rank,
                cell(&s.title),
                s.n,
                s.heat,
                s.gold.as_deref().unwrap_or("-"),
                s.purity,
                s.recall,
                if s.matched { "yes" } else { "" },
                s.broad_theme.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(out, "\nLeading gold clusters and their rank:\n");
        for (what, leaders) in [
            ("distinct messages", &r.leaders_by_messages),
            ("likes", &r.leaders_by_support),
        ] {
            for l in leaders {
                let _ = writeln!(
                    out,
                    "- by {what}: {} {} ({} distinct, {} likes): {}",
                    l.cluster,
                    cell(&l.title),
                    l.n_distinct,
                    l.likes,
                    l.rank
                        .map_or("not found".to_string(), |r| format!("rank {r}"))
                );
            }
        }
    }
    out
}

fn cell(s: &str) -> String {
    markdown_cell(truncate_chars(s, 40))
}

/// Baseline: average-linkage agglomerative clustering of the (L2-normalised) vectors. Returns the
/// full dendrogram as merges `(a, b, mean cosine)`, `b` merged into `a`; `cut` applies those at or
/// above a threshold. Nearest-neighbour chain: O(n²) time and memory, for evaluation-sized sets,
/// not for the history.
pub fn average_linkage(vectors: &[&[f32]]) -> Vec<(usize, usize, f32)> {
    let n = vectors.len();
    let mut sim = vec![0f32; n * n];
    for i in 0..n {
        for j in (i + 1)..n {
            let s = triage_core::classify::dot(vectors[i], vectors[j]);
            sim[i * n + j] = s;
            sim[j * n + i] = s;
        }
    }
    let mut size = vec![1usize; n];
    let mut active = vec![true; n];
    let mut merges = Vec::with_capacity(n.saturating_sub(1));
    let mut chain: Vec<usize> = Vec::new();
    while merges.len() + 1 < n {
        if chain.is_empty() {
            chain.push((0..n).find(|&i| active[i]).expect("an active cluster"));
        }
        let a = *chain.last().expect("non-empty chain");
        let prev = (chain.len() >= 2).then(|| chain[chain.len() - 2]);
        let mut best: Option<(usize, f32)> = None;
        for b in (0..n).filter(|&b| b != a && active[b]) {
            let s = sim[a * n + b];
            // On ties prefer the chain's previous element, so the chain always ends.
            if best.is_none_or(|(_, bs)| s > bs || (s == bs && Some(b) == prev)) {
                best = Some((b, s));
            }
        }
        let (b, s) = best.expect("another active cluster");
        if Some(b) != prev {
            chain.push(b);
            continue;
        }
        chain.truncate(chain.len() - 2);
        let (sa, sb) = (size[a] as f32, size[b] as f32);
        for k in 0..n {
            if active[k] && k != a && k != b {
                let v = (sa * sim[a * n + k] + sb * sim[b * n + k]) / (sa + sb);
                sim[a * n + k] = v;
                sim[k * n + a] = v;
            }
        }
        size[a] += size[b];
        active[b] = false;
        merges.push((a, b, s));
    }
    merges
}

/// Flat clusters of `n` items: the merges of `average_linkage` at or above `threshold` (average
/// linkage is monotone, so this is the dendrogram cut at that height).
pub fn cut(n: usize, merges: &[(usize, usize, f32)], threshold: f32) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], x: usize) -> usize {
        let mut r = x;
        while p[r] != r {
            r = p[r];
        }
        let mut y = x;
        while p[y] != r {
            let next = p[y];
            p[y] = r;
            y = next;
        }
        r
    }
    for &(a, b, s) in merges {
        if s >= threshold {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            parent[rb] = ra;
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    groups.into_values().collect()
}

/// Baseline clusters as hotspots, ranked by the same heat formula (every member counts as
/// distinct: the baseline has no notion of near-copies or places).
pub fn baseline_hotspots(
    clusters: &[Vec<usize>],
    ids: &[String],
    titles: &[String],
    times: &[Option<i64>],
    likes: &[u64],
    heat_params: &HeatParams,
    min_size: usize,
) -> Vec<Hotspot> {
    let mut out: Vec<Hotspot> = clusters
        .iter()
        .filter(|c| c.len() >= min_size)
        .map(|c| {
            let distinct: Vec<(Option<i64>, u64)> =
                c.iter().map(|&i| (times[i], likes[i])).collect();
            let (h, concentration) = heat(&distinct, heat_params);
            Hotspot {
                rank: 0,
                title: titles[c[0]].clone(),
                place: String::new(),
                category: None,
                heat: (h * 100.0).round() / 100.0,
                n: c.len(),
                time_from: None,
                time_to: None,
                ids: c.iter().map(|&i| ids[i].clone()).collect(),
                example_ids: c.iter().take(3).map(|&i| ids[i].clone()).collect(),
                district: None,
                messages: c.len(),
                likes: distinct.iter().map(|d| d.1).sum(),
                concentration,
                timeline: Vec::new(),
            }
        })
        .collect();
    out.sort_by(|a, b| b.heat.total_cmp(&a.heat).then(b.n.cmp(&a.n)));
    for (i, h) in out.iter_mut().enumerate() {
        h.rank = i + 1;
    }
    out
}

/// Reads a JSONL file of gold clusters or broad themes.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::Core(triage_core::Error::InvalidInput(format!(
                    "{}: line {}: {e}",
                    path.display(),
                    i + 1
                )))
            })
        })
        .collect()
}

/// A gold: its clusters and the broad themes that must not rank.
pub struct Gold<'a> {
    pub clusters: &'a [GoldCluster],
    pub broad: &'a [BroadTheme],
}

/// The baseline: average-linkage clustering cut at each threshold, ranked by `heat`, clusters of
/// at least `min_size`.
pub struct Baseline<'a> {
    pub thresholds: &'a [f32],
    pub heat: &'a HeatParams,
    pub min_size: usize,
}

/// The method's `ranked` hotspots and the baseline's (over the same cases' vectors), scored
/// against the gold for the top `k`. The first report is the method's.
pub fn evaluate(
    cases: &[(Case, Vec<f32>)],
    ranked: &[Hotspot],
    gold: &Gold,
    k: usize,
    baseline: &Baseline,
) -> Vec<GoldReport> {
    let (gold, broad) = (gold.clusters, gold.broad);
    let mut reports = vec![score("hotspots (this method)", ranked, gold, broad, k)];
    let vectors: Vec<&[f32]> = cases.iter().map(|(_, v)| v.as_slice()).collect();
    let merges = average_linkage(&vectors);
    let ids: Vec<String> = cases.iter().map(|(c, _)| c.id.clone()).collect();
    let titles: Vec<String> = cases
        .iter()
        .map(|(c, _)| {
            c.title
                .clone()
                .unwrap_or_else(|| c.text.chars().take(40).collect())
        })
        .collect();
    let times: Vec<Option<i64>> = cases.iter().map(|(c, _)| c.time).collect();
    let likes: Vec<u64> = cases
        .iter()
        .map(|(c, _)| triage_core::hotspots::likes(c))
        .collect();
    for &threshold in baseline.thresholds {
        let clusters = cut(cases.len(), &merges, threshold);
        let ranking = baseline_hotspots(
            &clusters,
            &ids,
            &titles,
            &times,
            &likes,
            baseline.heat,
            baseline.min_size,
        );
        reports.push(score(
            &format!("baseline cos ≥ {threshold:.2}"),
            &ranking,
            gold,
            broad,
            k,
        ));
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn average_linkage_cut_merges_close_points_only() {
        let v = [
            unit(&[1.0, 0.0, 0.0]),
            unit(&[0.99, 0.1, 0.0]),
            unit(&[0.0, 1.0, 0.0]),
            unit(&[0.0, 0.98, 0.1]),
            unit(&[0.0, 0.0, 1.0]),
        ];
        let refs: Vec<&[f32]> = v.iter().map(Vec::as_slice).collect();
        let merges = average_linkage(&refs);
        assert_eq!(merges.len(), 4);
        let mut clusters = cut(refs.len(), &merges, 0.9);
        for c in &mut clusters {
            c.sort();
        }
        clusters.sort();
        assert_eq!(clusters, vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn scoring_counts_a_split_gold_cluster_once() {
        let hotspot = |ids: &[&str]| Hotspot {
            rank: 0,
            title: "t".into(),
            place: String::new(),
            category: None,
            heat: 1.0,
            n: ids.len(),
            time_from: None,
            time_to: None,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            example_ids: Vec::new(),
            district: None,
            messages: ids.len(),
            likes: 0,
            concentration: 1.0,
            timeline: Vec::new(),
        };
        let gold = vec![GoldCluster {
            cluster: "G1".into(),
            title: "g".into(),
            ids: ["1", "2", "3", "4"].iter().map(|s| s.to_string()).collect(),
            n_distinct: Some(4),
            likes: Some(0),
        }];
        let broad = vec![BroadTheme {
            theme: "B1".into(),
            title: "b".into(),
            example_ids: vec!["8".into(), "9".into()],
        }];
        let ranking = vec![
            hotspot(&["1", "2", "5"]),
            hotspot(&["3", "4"]),
            hotspot(&["8", "9", "7"]),
        ];
        let r = score("x", &ranking, &gold, &broad, 3);
        assert_eq!(r.matched, 1);
        assert!((r.top[0].purity - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.top[0].recall - 0.5).abs() < 1e-9);
        assert!(!r.top[1].matched);
        assert_eq!(r.broad_in_top, 1);
        assert_eq!(r.leaders_by_messages[0].rank, Some(1));
    }
}
