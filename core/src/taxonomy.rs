//! The deployment's categories: stable ids, display names, optional descriptions and children.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One category. `id` never changes; `name` may be renamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_en: Option<String>,
    /// Free text that says what belongs here; used for zero-shot classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Category>,
}

/// The category tree. Classification works on the top level; children describe it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Taxonomy {
    pub categories: Vec<Category>,
}

impl Taxonomy {
    /// Reads a taxonomy file: either `{"categories": [...]}` or the nested name form
    /// `{"Level 1": {"Level 2": ["Level 3", ...]}}` (ids are then the names).
    pub fn load(path: &Path) -> Result<Self> {
        let raw = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&raw)
            .map_err(|e| Error::InvalidInput(format!("taxonomy {}: {e}", path.display())))
    }

    pub fn from_json(raw: &str) -> std::result::Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        if value.get("categories").is_some() {
            let taxonomy: Taxonomy = serde_json::from_value(value).map_err(|e| e.to_string())?;
            taxonomy.check_unique_ids()?;
            return Ok(taxonomy);
        }
        let categories = nested_names(&value).ok_or(
            "expected {\"categories\": [...]} or nested {\"name\": {\"child\": [\"leaf\", ...]}}",
        )?;
        Ok(Taxonomy { categories })
    }

    /// Builds a flat taxonomy from label names (e.g. the labels seen in training data).
    pub fn from_labels<I: IntoIterator<Item = String>>(labels: I) -> Self {
        let categories = labels
            .into_iter()
            .map(|name| Category {
                id: name.clone(),
                name,
                name_en: None,
                description: None,
                children: Vec::new(),
            })
            .collect();
        Taxonomy { categories }
    }

    /// Finds a top-level category by id, name or English name (case-insensitive).
    pub fn resolve(&self, label: &str) -> Option<&Category> {
        let label = label.trim();
        self.categories.iter().find(|c| {
            c.id == label
                || c.name == label
                || c.id.eq_ignore_ascii_case(label)
                || c.name_en
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(label))
        })
    }

    pub fn ids(&self) -> Vec<String> {
        self.categories.iter().map(|c| c.id.clone()).collect()
    }

    fn check_unique_ids(&self) -> std::result::Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for c in &self.categories {
            if !seen.insert(c.id.as_str()) {
                return Err(format!("duplicate category id {:?}", c.id));
            }
        }
        Ok(())
    }
}

impl Category {
    /// What a category is about, for zero-shot matching: its name, description and the
    /// names of its sub-categories.
    pub fn profile(&self) -> String {
        let mut parts = vec![self.name.clone()];
        if let Some(d) = &self.description {
            parts.push(d.clone());
        }
        let mut names = Vec::new();
        collect_names(&self.children, &mut names);
        names.retain(|n| n != "其他" && n != "Other");
        names.dedup();
        if !names.is_empty() {
            parts.push(names.join("、"));
        }
        parts.join("：")
    }
}

fn collect_names(children: &[Category], out: &mut Vec<String>) {
    for c in children {
        out.push(c.name.clone());
        collect_names(&c.children, out);
    }
}

fn nested_names(value: &serde_json::Value) -> Option<Vec<Category>> {
    let leaf = |name: &str, children| Category {
        id: name.to_string(),
        name: name.to_string(),
        name_en: None,
        description: None,
        children,
    };
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(name, children)| Some(leaf(name, nested_names(children)?)))
            .collect(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(|name| leaf(name, Vec::new())))
            .collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_names() {
        let t = Taxonomy::from_json(
            r#"{"交通运输": {"出租车管理": ["其他", "拒载"]}, "环境保护": {}}"#,
        )
        .unwrap();
        assert_eq!(t.ids(), vec!["交通运输", "环境保护"]);
        assert_eq!(t.categories[0].profile(), "交通运输：出租车管理、拒载");
    }

    #[test]
    fn reads_explicit_form_and_resolves() {
        let t = Taxonomy::from_json(
            r#"{"categories": [{"id": "transport", "name": "交通运输", "name_en": "Transport"}]}"#,
        )
        .unwrap();
        assert_eq!(t.resolve("交通运输").unwrap().id, "transport");
        assert_eq!(t.resolve("TRANSPORT").unwrap().id, "transport");
        assert!(t.resolve("教育").is_none());
    }

    #[test]
    fn rejects_duplicate_ids_and_garbage() {
        assert!(Taxonomy::from_json(
            r#"{"categories": [{"id": "a", "name": "A"}, {"id": "a", "name": "B"}]}"#
        )
        .is_err());
        assert!(Taxonomy::from_json("[1, 2]").is_err());
    }
}
