//! The unit directory (who handles what, where), the district gazetteer, and unit suggestions.
//!
//! A directory is data (TOML), not code: districts with aliases, units with the categories they
//! handle and the districts they cover, and templates that stamp out one unit per district
//! (e.g. "{district}教育局"). See `data/units.toml` for the shipped example.

pub mod learned;
pub mod route;

pub use learned::{LearnedUnit, LearnedUnits};
pub use route::{
    CategoryProb, RouteQuery, RouteUnit, Router, UnitEvidence, UnitNeighbor, UnitSource,
};

use crate::reply_units::UnitKind;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct District {
    pub name: String,
    /// The district that contains this one (a city for a county), for fallbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    pub id: String,
    pub name: String,
    /// Category ids this unit handles.
    pub categories: Vec<String>,
    /// Districts it covers; empty means everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub districts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Other names the unit goes by, to recognise it in past replies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A unit stamped out for every district (or those of a level, e.g. only counties).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitTemplate {
    /// With `{district}` replaced, e.g. "{district}-edu".
    pub id: String,
    /// With `{district}` replaced, e.g. "{district}教育局".
    pub name: String,
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitDirectory {
    #[serde(default, rename = "district")]
    pub districts: Vec<District>,
    #[serde(default, rename = "unit")]
    pub units: Vec<Unit>,
    #[serde(default, rename = "template", skip_serializing)]
    pub templates: Vec<UnitTemplate>,
}

/// Why a unit was suggested.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitSuggestion {
    pub unit_id: String,
    pub name: String,
    /// The unit's probability among the candidates (calibrated on held-out history once
    /// `triage train` has fitted the routing model).
    pub score: f32,
    /// The directory's rule that matched, e.g. "handles 教育文体 in A7县" (for programs; the
    /// call-taker reads `evidence`).
    pub rule: Option<String>,
    /// Ids of similar past cases this unit handled.
    pub similar_cases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<UnitKind>,
    /// Configured (units.toml) or learned from past cases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<UnitSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// Why, in the call-taker's language: "处理过 3 件相似案件（最相似 0.93）", "投诉地点在洋湖街道".
    #[serde(default)]
    pub evidence: Vec<UnitEvidence>,
}

impl UnitDirectory {
    /// Reads a TOML (or JSON, by extension) directory and expands its templates.
    pub fn load(path: &Path) -> Result<Self> {
        let raw = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let parsed: Result<Self, String> = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&raw).map_err(|e| e.to_string())
        } else {
            toml::from_str(&raw).map_err(|e| e.to_string())
        };
        let mut directory = parsed
            .map_err(|e| Error::InvalidInput(format!("unit directory {}: {e}", path.display())))?;
        directory.expand_templates();
        Ok(directory)
    }

    /// Parses a TOML directory and expands its templates.
    pub fn from_toml(raw: &str) -> Result<Self> {
        let mut directory: Self =
            toml::from_str(raw).map_err(|e| Error::InvalidInput(format!("unit directory: {e}")))?;
        directory.expand_templates();
        Ok(directory)
    }

    fn expand_templates(&mut self) {
        for template in std::mem::take(&mut self.templates) {
            for district in &self.districts {
                let fill = |s: &str| s.replace("{district}", &district.name);
                let id = fill(&template.id);
                if self.units.iter().any(|u| u.id == id) {
                    continue; // an explicit unit overrides its template
                }
                self.units.push(Unit {
                    id,
                    name: fill(&template.name),
                    categories: template.categories.clone(),
                    districts: vec![district.name.clone()],
                    contact: template.contact.clone(),
                    aliases: template.aliases.iter().map(|a| fill(a)).collect(),
                });
            }
        }
    }

    /// The most specific district named in `text`: the longest name or alias found, preferring
    /// a district over its parent ("A市A2区" → A2区, "朝阳区" → 朝阳区). A district below a city
    /// whose city is not named loses to a city that is: place names often contain a county's
    /// name ("A市五矿万境K9县" is a compound in A市, named after K9县; "A市湘江新区K3区小区" alike),
    /// and a county named alone still counts ("K9县某小区" → K9县).
    pub fn extract_district(&self, text: &str) -> Option<&District> {
        let named = |d: &District| {
            std::iter::once(&d.name)
                .chain(&d.aliases)
                .filter(|n| !n.is_empty() && text.contains(n.as_str()))
                .map(|n| n.chars().count())
                .max()
        };
        let found: Vec<(&District, usize)> = self
            .districts
            .iter()
            .filter_map(|d| named(d).map(|len| (d, len)))
            .collect();
        let city_named = found.iter().any(|(d, _)| d.parent.is_none());
        let parent_named = |parent: &str| found.iter().any(|(d, _)| d.name == parent);
        let mut best: Option<(&District, usize, usize)> = None; // (district, depth, name length)
        for &(district, len) in &found {
            if let Some(parent) = district.parent.as_deref() {
                if city_named && !parent_named(parent) {
                    continue;
                }
            }
            let candidate = (district, self.depth(district), len);
            if best.is_none_or(|b| (candidate.1, candidate.2) > (b.1, b.2)) {
                best = Some(candidate);
            }
        }
        best.map(|b| b.0)
    }

    fn depth(&self, district: &District) -> usize {
        let mut depth = 0;
        let mut parent = district.parent.as_deref();
        while let Some(p) = parent {
            depth += 1;
            parent = self
                .districts
                .iter()
                .find(|d| d.name == p)
                .and_then(|d| d.parent.as_deref());
            if depth > 8 {
                break; // a cycle in the data; stop rather than loop
            }
        }
        depth
    }

    /// The unit with this id or name.
    pub fn resolve(&self, id_or_name: &str) -> Option<&Unit> {
        self.units
            .iter()
            .find(|u| u.id == id_or_name || u.name == id_or_name)
    }

    /// The unit a text names (e.g. an official reply saying who handled the case): the longest
    /// name or alias found in it.
    pub fn find_named_unit(&self, text: &str) -> Option<&Unit> {
        self.units
            .iter()
            .flat_map(|u| {
                std::iter::once(&u.name)
                    .chain(&u.aliases)
                    .map(move |n| (u, n))
            })
            .filter(|(_, name)| !name.is_empty() && text.contains(name.as_str()))
            .max_by_key(|(_, name)| name.chars().count())
            .map(|(unit, _)| unit)
    }

    /// The district and its ancestors, most specific first.
    pub fn lineage(&self, district: &str) -> Vec<String> {
        let mut out = vec![district.to_string()];
        while let Some(parent) = self
            .districts
            .iter()
            .find(|d| Some(&d.name) == out.last())
            .and_then(|d| d.parent.clone())
        {
            if out.contains(&parent) || out.len() > 8 {
                break;
            }
            out.push(parent);
        }
        out
    }

    /// Top-`k` units by the directory's rules alone (the baseline the evaluation compares the
    /// router with). `categories` are (category id, probability), `district` the extracted one,
    /// `similar` the (case id, unit id, similarity) of similar past cases.
    /// A unit's score is the probability of the categories it handles, discounted by how far its
    /// coverage is from the complaint's district, plus a share from similar cases it handled.
    pub fn suggest(
        &self,
        categories: &[(String, f32)],
        district: Option<&str>,
        similar: &[(String, String, f32)],
        k: usize,
    ) -> Vec<UnitSuggestion> {
        const SIMILAR_WEIGHT: f32 = 0.5;
        let lineage = district.map(|d| self.lineage(d)).unwrap_or_default();
        let mut scored: BTreeMap<&str, UnitSuggestion> = BTreeMap::new();
        for unit in &self.units {
            // Exact district 1.0, its parent 0.5, … ; a unit for another district does not apply
            // (checked first: most units of a city's directory are another district's).
            let level = if unit.districts.is_empty() || lineage.is_empty() {
                None
            } else {
                match lineage.iter().position(|d| unit.districts.contains(d)) {
                    Some(level) => Some(level),
                    None => continue,
                }
            };
            let Some((category, p)) = categories
                .iter()
                .filter(|(c, _)| unit.categories.contains(c))
                .max_by(|a, b| a.1.total_cmp(&b.1))
            else {
                continue;
            };
            let (place, fit) = match level {
                Some(level) => (lineage[level].clone(), 0.5f32.powi(level as i32)),
                None if unit.districts.is_empty() => (
                    "everywhere".to_string(),
                    if lineage.is_empty() { 1.0 } else { 0.3 },
                ),
                None => (unit.districts.join("/"), 0.2),
            };
            scored.insert(
                &unit.id,
                UnitSuggestion {
                    unit_id: unit.id.clone(),
                    name: unit.name.clone(),
                    score: p * fit,
                    rule: Some(format!("handles {category} in {place}")),
                    similar_cases: Vec::new(),
                    contact: unit.contact.clone(),
                    kind: None,
                    source: Some(UnitSource::Configured),
                    district: unit.districts.first().cloned(),
                    evidence: Vec::new(),
                },
            );
        }
        let total_similarity: f32 = similar.iter().map(|s| s.2.max(0.0)).sum();
        for (case_id, unit_id, similarity) in similar {
            let Some(unit) = self.resolve(unit_id) else {
                continue;
            };
            let entry = scored.entry(&unit.id).or_insert_with(|| UnitSuggestion {
                unit_id: unit.id.clone(),
                name: unit.name.clone(),
                score: 0.0,
                rule: None,
                similar_cases: Vec::new(),
                contact: unit.contact.clone(),
                kind: None,
                source: Some(UnitSource::Configured),
                district: unit.districts.first().cloned(),
                evidence: Vec::new(),
            });
            entry.score += SIMILAR_WEIGHT * similarity.max(0.0) / total_similarity.max(1e-6);
            entry.similar_cases.push(case_id.clone());
        }
        let mut out: Vec<UnitSuggestion> = scored.into_values().collect();
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.unit_id.cmp(&b.unit_id))
        });
        out.truncate(k);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIRECTORY: &str = r#"
        [[district]]
        name = "A市"
        [[district]]
        name = "A2区"
        parent = "A市"
        [[district]]
        name = "朝阳区"
        parent = "北京市"
        aliases = ["朝阳"]
        [[district]]
        name = "北京市"

        [[unit]]
        id = "a-edu"
        name = "A市教育局"
        categories = ["教育文体"]
        districts = ["A市"]

        [[template]]
        id = "{district}-transport"
        name = "{district}交通运输局"
        aliases = ["{district}交通局"]
        categories = ["交通运输"]
    "#;

    fn directory() -> UnitDirectory {
        let mut d: UnitDirectory = toml::from_str(DIRECTORY).unwrap();
        d.expand_templates();
        d
    }

    #[test]
    fn extracts_most_specific_district() {
        let d = directory();
        assert_eq!(
            d.extract_district("A市A2区桂花坪街道路灯坏了")
                .unwrap()
                .name,
            "A2区"
        );
        assert_eq!(d.extract_district("A市某小区").unwrap().name, "A市");
        assert_eq!(
            d.extract_district("北京市朝阳区望京街道").unwrap().name,
            "朝阳区"
        );
        assert_eq!(d.extract_district("家住朝阳，噪音").unwrap().name, "朝阳区");
        assert!(d.extract_district("no place here").is_none());
    }

    #[test]
    fn a_county_inside_a_place_name_does_not_beat_a_named_city() {
        let d: UnitDirectory = toml::from_str(
            r#"
            [[district]]
            name = "A市"
            [[district]]
            name = "A2区"
            parent = "A市"
            [[district]]
            name = "K市"
            [[district]]
            name = "K9县"
            parent = "K市"
        "#,
        )
        .unwrap();
        let name = |t: &str| d.extract_district(t).map(|d| d.name.clone());
        // A compound named after a county, in A市: A市, not K9县.
        assert_eq!(
            name("A市五矿万境K9县交房后仍存在诸多问题").as_deref(),
            Some("A市")
        );
        // Its district named too: the district.
        assert_eq!(name("A市A2区五矿万境K9县").as_deref(), Some("A2区"));
        // The county with its own city, or alone: the county.
        assert_eq!(name("K市K9县城关镇").as_deref(), Some("K9县"));
        assert_eq!(name("K9县某小区路灯不亮").as_deref(), Some("K9县"));
    }

    #[test]
    fn templates_expand_per_district() {
        let d = directory();
        assert!(d
            .units
            .iter()
            .any(|u| u.id == "A2区-transport" && u.name == "A2区交通运输局"));
        assert_eq!(
            d.units
                .iter()
                .filter(|u| u.id.ends_with("-transport"))
                .count(),
            4
        );
    }

    #[test]
    fn shipped_directory_loads_and_routes() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/units.toml"));
        let d = UnitDirectory::load(path).unwrap();
        assert_eq!(
            d.extract_district("A市A2区桂花坪街道的小区").unwrap().name,
            "A2区"
        );
        let units = d.suggest(&[("教育文体".to_string(), 0.9)], Some("A7县"), &[], 2);
        assert_eq!(units[0].name, "A7县教育局");
        assert_eq!(units[1].name, "A市教育局");
    }

    #[test]
    fn finds_the_unit_a_reply_names() {
        let d = directory();
        let reply = "经A2区交通局调查核实，该线路已调整。";
        assert_eq!(d.find_named_unit(reply).unwrap().id, "A2区-transport");
        assert!(d.find_named_unit("感谢您的来信").is_none());
    }

    #[test]
    fn suggests_local_unit_first_with_rule_and_evidence() {
        let d = directory();
        let cats = vec![("交通运输".to_string(), 0.8), ("教育文体".to_string(), 0.2)];
        let similar = vec![("case-1".to_string(), "A2区-transport".to_string(), 0.9)];
        let units = d.suggest(&cats, Some("A2区"), &similar, 3);
        assert_eq!(units[0].unit_id, "A2区-transport");
        assert_eq!(units[0].similar_cases, vec!["case-1"]);
        assert_eq!(units[0].rule.as_deref(), Some("handles 交通运输 in A2区"));
        assert_eq!(units[1].unit_id, "A市-transport");
        assert!(units.iter().any(|u| u.unit_id == "a-edu"));
        assert!(!units.iter().any(|u| u.unit_id == "朝阳区-transport"));
    }
}
