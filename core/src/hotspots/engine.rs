//! The incremental clustering behind `mine` and `alerts`: one message at a time, in time order.
//!
//! Where the speed comes from: a new message is compared only with messages that share a
//! distinctive term with it (an inverted index holding the open clusters' messages), and only the
//! best-scoring candidates get a cosine. Clusters close after `window_days` without a message;
//! closing drops their messages from the index and their terms from memory, keeping a finished
//! hotspot only where it has `min_distinct` distinct messages. Time per message is bounded by the
//! window's contents, not by the history.

use super::terms::{
    idf, ngram_spans, ngrams, term_chars, variant_keys, DocFreq, Term, TermMap, TermTimeline,
    VariantKey, VariantMap,
};
use super::{category, heat, likes, rfc3339, Hotspot, HotspotParams};
use crate::vector::dot;
use crate::Case;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Candidates (by shared-term weight) that get a cosine, per message.
const MAX_CANDIDATES: usize = 256;

/// Indices of `cases` by time (then id); cases without a time come first.
pub fn time_order(cases: &[(Case, Vec<f32>)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cases.len()).collect();
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&cases[a].0, &cases[b].0);
        ca.time
            .unwrap_or(i64::MIN)
            .cmp(&cb.time.unwrap_or(i64::MIN))
            .then_with(|| ca.id.cmp(&cb.id))
    });
    order
}

struct Doc {
    case: u32,
    cluster: u32,
    group: u32,
    /// The distinctive terms it was indexed under, with their weights at arrival; emptied (and
    /// the index entries removed) when its cluster closes.
    distinctive: Vec<(Term, f32)>,
    /// Variant keys of its distinctive terms (see `terms::variant_keys`), emptied with them.
    variants: Vec<(VariantKey, Term)>,
}

/// Messages that are near-copies of one another: they count once.
struct Group {
    first_doc: u32,
    time: Option<i64>,
    likes: u64,
}

struct Cluster {
    docs: Vec<u32>,
    groups: Vec<Group>,
    /// Time of its first and last message.
    first: i64,
    last: i64,
    open: bool,
    /// Per distinctive term, how many of the cluster's groups and messages contain it (built
    /// from the second group on).
    terms: TermMap<TermCount>,
    /// Variant key → up to two of the cluster's terms with that key (built with `terms`): to
    /// find a newcomer that names a one-character variant of the cluster's place.
    keys: VariantMap<(Term, Option<Term>)>,
    /// The most groups any one term is in: the terms in that many are the cluster's core (in
    /// practice its place's name).
    top_groups: u16,
    districts: BTreeMap<String, u32>,
    /// Sum of the distinct messages' vectors (mean cosine to them = dot / groups).
    sum: Vec<f32>,
    /// Set when merged into another cluster (its members moved there).
    merged_into: Option<u32>,
}

#[derive(Debug, Default, Clone, Copy)]
struct TermCount {
    groups: u16,
    docs: u16,
}

/// What a push did with a message, for alerts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub cluster: u32,
    /// Whether it started a new group (a distinct message) rather than joining one as a copy.
    pub new_group: bool,
}

/// The clustering state. `batch` takes document frequencies from the whole input (for mining a
/// period); `streaming` counts them as messages arrive (for a replay, where the future is unknown).
pub struct Engine<'a> {
    cases: &'a [(Case, Vec<f32>)],
    params: &'a HotspotParams,
    /// Document frequencies for weights: the whole input's (batch) or those seen so far.
    df: DocFreq,
    /// Which messages contain each term, by time (batch: every message up front; streaming: those
    /// seen so far), for how specific a term is to a cluster over the cluster's own time span.
    timeline: TermTimeline,
    /// Batch mode: frequencies are the whole input's (a term seen once in all is not distinctive).
    batch: bool,
    /// Terms of every case in batch mode, computed up front.
    precomputed: Option<Vec<Vec<Term>>>,
    docs: Vec<Doc>,
    postings: TermMap<Vec<u32>>,
    clusters: Vec<Cluster>,
    open: Vec<u32>,
    finished: Vec<Hotspot>,
    now: i64,
    next_sweep: i64,
    scores: Vec<f32>,
    touched: Vec<u32>,
}

impl<'a> Engine<'a> {
    pub fn batch(cases: &'a [(Case, Vec<f32>)], params: &'a HotspotParams) -> Self {
        let terms: Vec<Vec<Term>> = cases
            .par_iter()
            .map(|(c, _)| case_terms(c, params))
            .collect();
        let mut df = DocFreq::default();
        for t in &terms {
            df.add(t);
        }
        let mut engine = Self::streaming(cases, params);
        engine.df = df;
        engine.batch = true;
        // Only distinctive terms are ever looked up again (as candidates, in the index or as a
        // cluster's terms), so each message keeps only those: on 100,000 messages the common
        // terms would be most of the memory.
        let max_df = engine.max_df();
        let df = &engine.df;
        let terms: Vec<Vec<Term>> = terms
            .into_par_iter()
            .map(|ts| {
                ts.into_iter()
                    .filter(|&t| (2..=max_df).contains(&df.get(t)))
                    .collect()
            })
            .collect();
        let mut timeline = TermTimeline::with_capacity(df, |n| (2..=max_df).contains(&n));
        for i in time_order(cases) {
            timeline.add(cases[i].0.time.unwrap_or(i64::MIN + 1), &terms[i]);
        }
        engine.timeline = timeline;
        engine.precomputed = Some(terms);
        engine
    }

    pub fn streaming(cases: &'a [(Case, Vec<f32>)], params: &'a HotspotParams) -> Self {
        Self {
            cases,
            params,
            df: DocFreq::default(),
            timeline: TermTimeline::default(),
            batch: false,
            precomputed: None,
            docs: Vec::new(),
            postings: TermMap::default(),
            clusters: Vec::new(),
            open: Vec::new(),
            finished: Vec::new(),
            now: i64::MIN,
            next_sweep: i64::MIN,
            scores: Vec::new(),
            touched: Vec::new(),
        }
    }

    fn max_df(&self) -> u32 {
        ((self.df.docs() as f32 * self.params.max_df_share).ceil() as u32)
            .max(self.params.max_df_floor)
            .max(2)
    }

    /// How many messages from `window_days` before the cluster's first message up to `to`
    /// contain `t`: the messages a term specific to the cluster would mostly be in. Whole-history
    /// frequencies would not do: a place that complains in several separate episodes (every
    /// year; or a history of recycled texts) is in every episode's messages, and no one episode
    /// would hold most of them.
    fn span_df(&self, cluster: &Cluster, t: Term, to: i64) -> u32 {
        let from = cluster.first.saturating_sub(self.window_secs());
        self.timeline.count(t, from, to)
    }

    fn window_secs(&self) -> i64 {
        (self.params.window_days * 86_400.0) as i64
    }

    /// Adds case `i` (callers go in time order) and returns where it went.
    pub fn push(&mut self, i: usize) -> Placed {
        let case = &self.cases[i].0;
        let time = case.time.unwrap_or(self.now.max(i64::MIN + 1));
        if time > self.now {
            self.now = time;
        }
        if self.now >= self.next_sweep {
            self.sweep();
            self.next_sweep = self.now.saturating_add(86_400);
        }
        let terms = match &self.precomputed {
            Some(all) => all[i].clone(),
            None => case_terms(case, self.params),
        };
        if !self.batch {
            self.df.add(&terms);
            self.timeline.add(time, &terms);
        }
        let max_df = self.max_df();
        let docs_total = self.df.docs();
        // Distinctive: not common, and (with the whole input's frequencies) shared with another
        // message. Streaming, a term seen only here is kept: the next message may share it.
        let min_df = if self.batch { 2 } else { 1 };
        let distinctive: Vec<(Term, f32)> = terms
            .iter()
            .filter_map(|&t| {
                let df = self.df.get(t);
                (df >= min_df && df <= max_df).then(|| (t, idf(df, docs_total)))
            })
            .collect();
        drop(terms);
        let variants: Vec<(VariantKey, Term)> = {
            let chars = term_chars(
                case.title.as_deref(),
                &case.text,
                self.params.head_chars,
                true,
            );
            variant_keys(&chars, self.params.ngram_min, self.params.ngram_max)
                .into_iter()
                .filter(|(_, t)| distinctive.binary_search_by(|(d, _)| d.cmp(t)).is_ok())
                .collect()
        };

        // Shared-term weight with every indexed message of an open cluster.
        let this_doc = self.docs.len() as u32;
        self.scores.resize(self.docs.len(), 0.0);
        for &(t, w) in &distinctive {
            let Some(list) = self.postings.get_mut(&t) else {
                continue;
            };
            let docs = &self.docs;
            let clusters = &self.clusters;
            let scores = &mut self.scores;
            let touched = &mut self.touched;
            list.retain(|&d| {
                let doc = &docs[d as usize];
                if !clusters[doc.cluster as usize].open {
                    return false;
                }
                if scores[d as usize] == 0.0 {
                    touched.push(d);
                }
                scores[d as usize] += w;
                true
            });
        }
        let mut candidates: Vec<(u32, f32)> = self
            .touched
            .drain(..)
            .map(|d| (d, std::mem::take(&mut self.scores[d as usize])))
            .filter(|&(_, s)| s >= self.params.min_shared_idf)
            .collect();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        candidates.truncate(MAX_CANDIDATES);

        let vector = &self.cases[i].1;
        // Linked messages (cosine ≥ link_cosine), and the best link into each cluster.
        let mut links: Vec<(u32, f32)> = Vec::new();
        let mut best_per_cluster: BTreeMap<u32, (u32, f32)> = BTreeMap::new();
        for &(d, _) in &candidates {
            let doc = &self.docs[d as usize];
            let cos = dot(vector, &self.cases[doc.case as usize].1);
            if cos < self.params.link_cosine {
                continue;
            }
            links.push((d, cos));
            let entry = best_per_cluster.entry(doc.cluster).or_insert((d, cos));
            if cos > entry.1 {
                *entry = (d, cos);
            }
        }
        // Clusters it may join: linked, close to the cluster as a whole (mean cosine to its
        // distinct messages), and agreeing on the place.
        let joinable: Vec<(u32, u32, f32)> = best_per_cluster
            .iter()
            .filter(|(&c, _)| {
                let cluster = &self.clusters[c as usize];
                dot(vector, &cluster.sum) / cluster.groups.len() as f32 >= self.params.mean_cosine
                    && self.compatible(c, case, &distinctive, &variants)
            })
            .map(|(&c, &(d, cos))| (c, d, cos))
            .collect();
        // The best link decides where it goes.
        let best: Option<(u32, f32)> = joinable
            .iter()
            .map(|&(_, d, cos)| (d, cos))
            .max_by(|a, b| a.1.total_cmp(&b.1));

        let likes = likes(case);
        let (placed, group) = match best {
            Some((d, _)) => {
                let c = self.docs[d as usize].cluster;
                // A near-copy of a linked member joins that member's group.
                let mine = shingles(case);
                let copy_of = links
                    .iter()
                    .filter(|(m, _)| self.docs[*m as usize].cluster == c)
                    .map(|&(m, _)| {
                        let other = &self.cases[self.docs[m as usize].case as usize].0;
                        (m, jaccard(&mine, &shingles(other)))
                    })
                    .filter(|&(_, j)| j >= self.params.near_copy_jaccard)
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(m, _)| m);
                if copy_of.is_none() {
                    self.materialise(c);
                }
                let cluster = &mut self.clusters[c as usize];
                let counting = cluster.groups.len() > 1 || copy_of.is_none();
                if counting {
                    for &(t, _) in &distinctive {
                        let e = cluster.terms.entry(t).or_default();
                        e.docs = e.docs.saturating_add(1);
                        if copy_of.is_none() {
                            e.groups = e.groups.saturating_add(1);
                            cluster.top_groups = cluster.top_groups.max(e.groups);
                        }
                    }
                    for &(key, t) in &variants {
                        add_key(&mut cluster.keys, key, t);
                    }
                }
                let group = match copy_of {
                    Some(m) => {
                        let g = self.docs[m as usize].group;
                        let group = &mut cluster.groups[g as usize];
                        group.likes = group.likes.max(likes);
                        g
                    }
                    None => {
                        cluster.groups.push(Group {
                            first_doc: this_doc,
                            time: case.time,
                            likes,
                        });
                        for (x, v) in cluster.sum.iter_mut().zip(vector) {
                            *x += v;
                        }
                        (cluster.groups.len() - 1) as u32
                    }
                };
                cluster.docs.push(this_doc);
                cluster.first = cluster.first.min(time);
                cluster.last = cluster.last.max(time);
                if let Some(d) = &case.district {
                    *cluster.districts.entry(d.clone()).or_insert(0) += 1;
                }
                (
                    Placed {
                        cluster: c,
                        new_group: copy_of.is_none(),
                    },
                    group,
                )
            }
            None => {
                let c = self.clusters.len() as u32;
                let mut districts = BTreeMap::new();
                if let Some(d) = &case.district {
                    districts.insert(d.clone(), 1);
                }
                self.clusters.push(Cluster {
                    docs: vec![this_doc],
                    groups: vec![Group {
                        first_doc: this_doc,
                        time: case.time,
                        likes,
                    }],
                    first: time,
                    last: time,
                    open: true,
                    terms: TermMap::default(),
                    keys: VariantMap::default(),
                    top_groups: 0,
                    districts,
                    sum: vector.clone(),
                    merged_into: None,
                });
                self.open.push(c);
                (
                    Placed {
                        cluster: c,
                        new_group: true,
                    },
                    0,
                )
            }
        };
        for &(t, _) in &distinctive {
            self.postings.entry(t).or_default().push(this_doc);
        }
        self.docs.push(Doc {
            case: i as u32,
            cluster: placed.cluster,
            group,
            distinctive,
            variants,
        });
        // Linked to several clusters: they may be fragments of one, which this message bridges.
        // Each merges into its cluster when the two are close as wholes, this message counted in.
        for &(other, _, _) in &joinable {
            self.merge(placed.cluster, other);
        }
        placed
    }

    /// Moves cluster `other` into `target` when the two are close as wholes (mean cosine between
    /// their distinct messages ≥ `mean_cosine`) and agree on the district.
    fn merge(&mut self, target: u32, other: u32) {
        if target == other {
            return;
        }
        let (a, b) = (
            &self.clusters[target as usize],
            &self.clusters[other as usize],
        );
        if !b.open || b.merged_into.is_some() {
            return;
        }
        let cross = dot(&a.sum, &b.sum) / (a.groups.len() * b.groups.len()) as f32;
        if cross < self.params.mean_cosine {
            return;
        }
        if let (Some(da), Some(db)) = (majority(&a.districts), majority(&b.districts)) {
            if !self.same_place(da, db) {
                return;
            }
        }
        if self.variant_conflict(target, other) {
            return;
        }
        self.materialise(target);
        self.materialise(other);
        let mut moved = std::mem::replace(
            &mut self.clusters[other as usize],
            Cluster {
                docs: Vec::new(),
                groups: Vec::new(),
                first: i64::MAX,
                last: i64::MIN,
                open: false,
                terms: TermMap::default(),
                keys: VariantMap::default(),
                top_groups: 0,
                districts: BTreeMap::new(),
                sum: Vec::new(),
                merged_into: Some(target),
            },
        );
        let base = self.clusters[target as usize].groups.len() as u32;
        for &d in &moved.docs {
            let doc = &mut self.docs[d as usize];
            doc.cluster = target;
            doc.group += base;
        }
        let t = &mut self.clusters[target as usize];
        t.docs.append(&mut moved.docs);
        t.groups.append(&mut moved.groups);
        for (term, count) in moved.terms {
            let e = t.terms.entry(term).or_default();
            e.groups = e.groups.saturating_add(count.groups);
            e.docs = e.docs.saturating_add(count.docs);
            t.top_groups = t.top_groups.max(e.groups);
        }
        for (key, (a, b)) in moved.keys {
            add_key(&mut t.keys, key, a);
            if let Some(b) = b {
                add_key(&mut t.keys, key, b);
            }
        }
        for (d, n) in moved.districts {
            *t.districts.entry(d).or_insert(0) += n;
        }
        for (x, v) in t.sum.iter_mut().zip(&moved.sum) {
            *x += v;
        }
        t.first = t.first.min(moved.first);
        t.last = t.last.max(moved.last);
    }

    /// Whether a message may join cluster `c`: its district does not contradict the cluster's,
    /// it does not name a one-character variant of the cluster's place instead of the place,
    /// and (for a cluster of `key_from` groups or more) it contains one of the cluster's
    /// signature terms.
    fn compatible(
        &self,
        c: u32,
        case: &Case,
        distinctive: &[(Term, f32)],
        variants: &[(VariantKey, Term)],
    ) -> bool {
        let cluster = &self.clusters[c as usize];
        if let (Some(d), Some(cd)) = (&case.district, majority(&cluster.districts)) {
            if !self.same_place(d, cd) {
                return false;
            }
        }
        let has = |t: Term| distinctive.binary_search_by(|(d, _)| d.cmp(&t)).is_ok();
        for &(key, mine) in variants {
            let Some(&(a, b)) = cluster.keys.get(&key) else {
                continue;
            };
            for theirs in std::iter::once(a).chain(b) {
                if theirs != mine
                    && !has(theirs)
                    && !cluster.terms.contains_key(&mine)
                    && self.df.get(mine) >= 2
                    && self.is_core(cluster, theirs)
                {
                    return false;
                }
            }
        }
        if cluster.groups.len() < self.params.key_from.max(2) {
            return true;
        }
        distinctive
            .iter()
            .any(|(t, _)| self.is_signature(cluster, *t))
    }

    /// Two clusters name one-character variants of each other's place (a signature term of one
    /// has a variant among the other's signature terms, which the other lacks): two places.
    fn variant_conflict(&self, a: u32, b: u32) -> bool {
        let (a, b) = (&self.clusters[a as usize], &self.clusters[b as usize]);
        a.keys.iter().any(|(key, &(x, y))| {
            let Some(&(u, v)) = b.keys.get(key) else {
                return false;
            };
            std::iter::once(x).chain(y).any(|ta| {
                std::iter::once(u).chain(v).any(|tb| {
                    ta != tb
                        && !b.terms.contains_key(&ta)
                        && !a.terms.contains_key(&tb)
                        && self.is_core(a, ta)
                        && self.is_core(b, tb)
                })
            })
        })
    }

    /// Builds the term counts and variant keys of a cluster of one group (they are kept from
    /// the second group on; a cluster that stays a singleton never pays for them).
    fn materialise(&mut self, c: u32) {
        let cluster = &self.clusters[c as usize];
        if cluster.groups.len() != 1 || !cluster.terms.is_empty() {
            return;
        }
        let mut counts: TermMap<TermCount> = TermMap::default();
        let mut keys: VariantMap<(Term, Option<Term>)> = VariantMap::default();
        for (k, &d) in cluster.docs.iter().enumerate() {
            let doc = &self.docs[d as usize];
            for &(t, _) in &doc.distinctive {
                let e = counts.entry(t).or_default();
                e.docs = e.docs.saturating_add(1);
                if k == 0 {
                    e.groups += 1;
                }
            }
            for &(key, t) in &doc.variants {
                add_key(&mut keys, key, t);
            }
        }
        let cluster = &mut self.clusters[c as usize];
        cluster.top_groups = counts.values().map(|e| e.groups).max().unwrap_or(0);
        cluster.terms = counts;
        cluster.keys = keys;
    }

    /// A signature term of a cluster: in at least `key_coverage` of its distinct messages (and
    /// two), and mostly found inside it (`key_specificity` of the messages that contain it, from
    /// `window_days` before the cluster began up to now, are members). In practice: the place's
    /// or the group's name, and the problem's own words.
    fn is_signature(&self, cluster: &Cluster, t: Term) -> bool {
        self.is_signature_until(cluster, t, self.now)
    }

    fn is_signature_until(&self, cluster: &Cluster, t: Term, to: i64) -> bool {
        let Some(count) = cluster.terms.get(&t) else {
            return false;
        };
        let need = ((cluster.groups.len() as f32 * self.params.key_coverage).ceil() as u16).max(2);
        count.groups >= need
            && count.docs as f32
                >= self.params.key_specificity * self.span_df(cluster, t, to) as f32
    }

    /// A core term: a signature term in as many groups as any term is (the place's name).
    fn is_core(&self, cluster: &Cluster, t: Term) -> bool {
        cluster
            .terms
            .get(&t)
            .is_some_and(|count| count.groups == cluster.top_groups)
            && self.is_signature(cluster, t)
    }

    /// A signature term over the cluster's whole span: `is_signature` counting the messages up to
    /// `window_days` after its last one too (batch: the input's; in a replay, those seen so far).
    /// A term that looked specific to the cluster while it grew but is common around it (a
    /// writer's stock phrases) is not one.
    fn is_final_signature(&self, cluster: &Cluster, t: Term) -> bool {
        self.is_signature_until(cluster, t, cluster.last.saturating_add(self.window_secs()))
    }

    /// Equal, or one contains the other (a county and its city).
    fn same_place(&self, a: &str, b: &str) -> bool {
        if a == b {
            return true;
        }
        let ancestors = |x: &str| {
            let mut out = Vec::new();
            let mut cur = self.params.district_parents.get(x);
            while let Some(p) = cur {
                if out.len() > 8 || out.contains(p) {
                    break;
                }
                out.push(p.clone());
                cur = self.params.district_parents.get(p);
            }
            out
        };
        ancestors(a).iter().any(|p| p == b) || ancestors(b).iter().any(|p| p == a)
    }

    /// Closes clusters idle for longer than the window.
    fn sweep(&mut self) {
        let horizon = self
            .now
            .saturating_sub((self.params.window_days * 86_400.0) as i64);
        let mut still_open = Vec::with_capacity(self.open.len());
        for c in std::mem::take(&mut self.open) {
            if self.clusters[c as usize].last < horizon {
                self.close(c);
            } else {
                still_open.push(c);
            }
        }
        self.open = still_open;
    }

    fn close(&mut self, c: u32) {
        let min_distinct = self.params.min_distinct.max(1);
        if self.clusters[c as usize].groups.len() >= min_distinct {
            if let Some(h) = self.hotspot(c) {
                self.finished.push(h);
            }
        }
        let cluster = &mut self.clusters[c as usize];
        cluster.open = false;
        cluster.terms = TermMap::default();
        cluster.keys = VariantMap::default();
        for &d in &cluster.docs {
            let doc = &mut self.docs[d as usize];
            doc.variants = Vec::new();
            for (t, _) in std::mem::take(&mut doc.distinctive) {
                if let Some(list) = self.postings.get_mut(&t) {
                    list.retain(|&x| x != d);
                    if list.is_empty() {
                        self.postings.remove(&t);
                    }
                }
            }
        }
    }

    /// The cluster a message went to, as it is now (for alerts).
    pub fn cluster_groups(&self, c: u32) -> impl Iterator<Item = (Option<i64>, u64)> + '_ {
        self.clusters[c as usize]
            .groups
            .iter()
            .map(|g| (g.time, g.likes))
    }

    /// Case indices of the cluster's distinct messages (one per group), in arrival order.
    pub fn cluster_distinct_cases(&self, c: u32) -> Vec<usize> {
        self.clusters[c as usize]
            .groups
            .iter()
            .map(|g| self.docs[g.first_doc as usize].case as usize)
            .collect()
    }

    /// The cluster as a hotspot (rank 0: ranking is the caller's); `None` for a cluster of
    /// `key_from` or more distinct messages without a signature term: no one place or group
    /// holds it together, so it is a broad theme, not a hotspot.
    ///
    /// Its signature terms are taken over its whole span (`is_final_signature`), and
    /// only the groups that name one of them are reported: a message that joined through a
    /// phrase which turned out common over the period is not about the place.
    pub fn hotspot(&self, c: u32) -> Option<Hotspot> {
        let p = self.params;
        let cluster = &self.clusters[c as usize];
        let kept: Vec<bool> = if cluster.groups.len() >= p.key_from.max(2) {
            let signature: TermMap<()> = cluster
                .terms
                .keys()
                .filter(|t| self.is_final_signature(cluster, **t))
                .map(|t| (*t, ()))
                .collect();
            let mut kept = vec![false; cluster.groups.len()];
            for &d in &cluster.docs {
                let doc = &self.docs[d as usize];
                if doc
                    .distinctive
                    .iter()
                    .any(|(t, _)| signature.contains_key(t))
                {
                    kept[doc.group as usize] = true;
                }
            }
            kept
        } else {
            vec![true; cluster.groups.len()]
        };
        let groups: Vec<&Group> = cluster
            .groups
            .iter()
            .zip(&kept)
            .filter_map(|(g, k)| k.then_some(g))
            .collect();
        if groups.is_empty() {
            return None;
        }
        let member_docs: Vec<u32> = cluster
            .docs
            .iter()
            .copied()
            .filter(|&d| kept[self.docs[d as usize].group as usize])
            .collect();
        let label = self.place_label(c, &groups);
        if label.is_none() && cluster.groups.len() >= p.key_from.max(2) {
            return None;
        }
        let case_of = |d: u32| &self.cases[self.docs[d as usize].case as usize];
        // Centre: mean of the distinct messages' vectors.
        let dim = case_of(member_docs[0]).1.len();
        let mut centre = vec![0f32; dim];
        for g in &groups {
            for (x, v) in centre.iter_mut().zip(&case_of(g.first_doc).1) {
                *x += v;
            }
        }
        let mut by_closeness: Vec<(u32, f32)> = groups
            .iter()
            .map(|g| (g.first_doc, dot(&centre, &case_of(g.first_doc).1)))
            .collect();
        by_closeness.sort_by(|a, b| b.1.total_cmp(&a.1));
        let title = {
            let case = &case_of(by_closeness[0].0).0;
            case.title
                .clone()
                .filter(|t| !t.trim().is_empty())
                .unwrap_or_else(|| case.text.chars().take(40).collect())
        };
        let example_ids = by_closeness
            .iter()
            .take(p.examples)
            .map(|(d, _)| case_of(*d).0.id.clone())
            .collect();
        let mut members: Vec<&Case> = member_docs.iter().map(|&d| &case_of(d).0).collect();
        members.sort_by(|a, b| {
            a.time
                .unwrap_or(i64::MIN)
                .cmp(&b.time.unwrap_or(i64::MIN))
                .then_with(|| a.id.cmp(&b.id))
        });
        let times: Vec<i64> = members.iter().filter_map(|c| c.time).collect();
        let distinct: Vec<(Option<i64>, u64)> = groups.iter().map(|g| (g.time, g.likes)).collect();
        let (heat, concentration) = heat(&distinct, &p.heat);
        let mut categories: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &members {
            if let Some(cat) = category(m) {
                *categories.entry(cat).or_insert(0) += 1;
            }
        }
        let category = categories
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(c, _)| c.to_string());
        let mut districts: BTreeMap<String, u32> = BTreeMap::new();
        for m in &members {
            if let Some(d) = &m.district {
                *districts.entry(d.clone()).or_insert(0) += 1;
            }
        }
        let district = majority(&districts).map(str::to_string);
        let place = match (&district, label) {
            (Some(d), Some(l)) if !l.contains(d.as_str()) => format!("{d} {l}"),
            (_, Some(l)) => l,
            (Some(d), None) => d.clone(),
            (None, None) => String::new(),
        };
        let mut timeline: Vec<(i64, u64)> = groups
            .iter()
            .filter_map(|g| g.time.map(|t| (t, g.likes)))
            .collect();
        timeline.sort_unstable();
        Some(Hotspot {
            rank: 0,
            title,
            place,
            category,
            heat: (heat * 100.0).round() / 100.0,
            n: groups.len(),
            time_from: times.first().and_then(|t| rfc3339(*t)),
            time_to: times.last().and_then(|t| rfc3339(*t)),
            ids: members.iter().map(|c| c.id.clone()).collect(),
            example_ids,
            district,
            messages: member_docs.len(),
            likes: distinct.iter().map(|d| d.1).sum(),
            concentration: (concentration * 1000.0).round() / 1000.0,
            timeline,
        })
    }

    /// The signature term most of the cluster's groups share (then: the rarer, the longer), as
    /// text, extended left and right while the longer string is in as many groups.
    fn place_label(&self, c: u32, groups: &[&Group]) -> Option<String> {
        let p = self.params;
        let cluster = &self.clusters[c as usize];
        let members: Vec<&Case> = groups
            .iter()
            .map(|g| &self.cases[self.docs[g.first_doc as usize].case as usize].0)
            .collect();
        // Titles name the place more often than bodies do: how many titles hold each term.
        let mut in_titles: TermMap<u32> = TermMap::default();
        for m in &members {
            let title = term_chars(m.title.as_deref(), "", p.head_chars, true);
            for t in ngrams(&title, p.ngram_min, p.ngram_max) {
                *in_titles.entry(t).or_insert(0) += 1;
            }
        }
        let titled = |t: &Term| in_titles.get(t).copied().unwrap_or(0);
        let (&term, count) = cluster
            .terms
            .iter()
            .filter(|(t, _)| self.is_final_signature(cluster, **t))
            .max_by(|a, b| {
                a.1.groups
                    .cmp(&b.1.groups)
                    .then_with(|| titled(a.0).cmp(&titled(b.0)))
                    .then_with(|| self.df.get(*b.0).cmp(&self.df.get(*a.0)))
                    .then_with(|| b.0.cmp(a.0))
            })?;
        let heads: Vec<Vec<char>> = members
            .iter()
            .map(|m| term_chars(m.title.as_deref(), &m.text, p.head_chars, true))
            .collect();
        let (h, s, e) = heads.iter().enumerate().find_map(|(h, chars)| {
            ngram_spans(chars, p.ngram_min, p.ngram_max)
                .into_iter()
                .find(|&(t, _, _)| t == term)
                .map(|(_, s, e)| (h, s, e))
        })?;
        let texts: Vec<String> = heads.iter().map(|h| h.iter().collect()).collect();
        let chars = &heads[h];
        let shared = |s: usize, e: usize| {
            let needle: String = chars[s..e].iter().collect();
            texts.iter().filter(|t| t.contains(&needle)).count()
        };
        let want = shared(s, e).min(count.groups as usize);
        let (mut s, mut e) = (s, e);
        while s > 0 && chars[s - 1] != ' ' && e - s < 12 && shared(s - 1, e) >= want {
            s -= 1;
        }
        while e < chars.len() && chars[e] != ' ' && e - s < 12 && shared(s, e + 1) >= want {
            e += 1;
        }
        // Shown as written (terms are lower-cased), without a district name in front.
        let shown = term_chars(
            members[h].title.as_deref(),
            &members[h].text,
            p.head_chars,
            false,
        );
        let mut label: String = shown[s..e].iter().collect();
        if let Some(district) = p
            .district_parents
            .iter()
            .flat_map(|(d, parent)| [d, parent])
            .filter(|d| label.starts_with(d.as_str()) && label.len() > d.len())
            .max_by_key(|d| d.len())
        {
            label = label[district.len()..].to_string();
        }
        Some(label)
    }

    /// Closes every cluster and returns the hotspots found (unranked).
    pub fn finish(mut self) -> Vec<Hotspot> {
        for c in std::mem::take(&mut self.open) {
            self.close(c);
        }
        self.finished
    }

    /// Clusters still open, as hotspots (for a snapshot of the present).
    pub fn open_hotspots(&self) -> Vec<Hotspot> {
        self.open
            .iter()
            .filter(|&&c| self.clusters[c as usize].groups.len() >= self.params.min_distinct)
            .filter_map(|&c| self.hotspot(c))
            .collect()
    }
}

/// Character 3-gram shingles of title and body, hashed and sorted: near-copies are messages whose
/// shingle sets have a Jaccard similarity of at least `near_copy_jaccard` (the usual definition).
fn shingles(case: &Case) -> Vec<Term> {
    let chars: Vec<char> = case.full_text().chars().collect();
    let mut out: Vec<Term> = chars
        .windows(3)
        .map(|w| {
            w.iter().fold(0x811c_9dc5u32, |h, &c| {
                (h ^ c as u32).wrapping_mul(0x0100_0193)
            })
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn case_terms(case: &Case, p: &HotspotParams) -> Vec<Term> {
    let chars = term_chars(case.title.as_deref(), &case.text, p.head_chars, true);
    ngrams(&chars, p.ngram_min, p.ngram_max)
}

fn majority(votes: &BTreeMap<String, u32>) -> Option<&str> {
    votes
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(d, _)| d.as_str())
}

/// Records that the cluster holds term `t` under variant key `key` (at most two terms a key).
fn add_key(keys: &mut VariantMap<(Term, Option<Term>)>, key: VariantKey, t: Term) {
    match keys.get_mut(&key) {
        None => {
            keys.insert(key, (t, None));
        }
        Some((a, b)) => {
            if *a != t && b.is_none() {
                *b = Some(t);
            }
        }
    }
}

/// Jaccard similarity of two sorted term sets.
pub fn jaccard(a: &[Term], b: &[Term]) -> f32 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    both as f32 / (a.len() + b.len() - both) as f32
}
