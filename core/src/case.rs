//! A past case (or a new complaint): the unit of storage and of classification.

use serde::{Deserialize, Serialize};

/// A citizen complaint with whatever is known about it. `label` and `unit` are the human
/// decisions; `predicted` is the machine's, kept apart so a reclassification never overwrites
/// a human label.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub text: String,
    /// Category id (slug) decided by a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Unit id that handled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// Unix seconds (UTC) of when the complaint arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
    /// The official reply, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<Prediction>,
    /// Fields of the input this program does not interpret, kept as they came.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A machine suggestion written back onto a stored case by batch reclassification.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub category: String,
    pub confidence: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub classifier_version: String,
}

impl Case {
    /// The text that is embedded and classified: title and body, as one string.
    pub fn full_text(&self) -> String {
        match self.title.as_deref().map(str::trim) {
            Some(title) if !title.is_empty() && !self.text.starts_with(title) => {
                format!("{title}\n{}", self.text)
            }
            _ => self.text.clone(),
        }
    }
}
