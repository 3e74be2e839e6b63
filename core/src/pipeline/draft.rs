//! The `draft` use case: a reply draft for an analysed complaint, by the configured method
//! (`reply::DraftMethod`), always through the faithfulness guard. The pure parts (citations,
//! restatement checks, the methods) are in `reply`; the guard in `guard`.
//!
//! Streaming: the guard works on finished sentences, so nothing the model writes is passed on
//! as it is written. What `on_text` receives is checked text: the template's opening before the
//! model runs (so the call-taker sees the draft start at once), then the rest of the checked
//! draft. The returned `Draft::text` is the authority: when the guard's view of the whole draft
//! differs from what was streamed (it cannot for the shipped template, whose opening has no
//! facts), the caller shows the returned text.

use super::{Analysis, Complaint, Pipeline, Suggestion};
use crate::guard::{self, Passage};
use crate::prompt::ChatMessage;
use crate::reply::{self, Draft, DraftMethod, ReplyCandidate, SummarySource};
use crate::{pii, text, CaseFilter, Error, Generator, Result};
use std::time::Instant;

/// Stands for the restatement while the template's opening is streamed before the model runs.
const SUMMARY_MARK: &str = "\u{1}SUMMARY\u{1}";

impl Pipeline {
    /// Writes the reply draft by the configured method (`DraftConfig::method`), calling
    /// `on_text` with checked text as it becomes final (`false` from it cancels the model).
    pub fn draft(
        &self,
        analysis: &Analysis,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Draft> {
        self.draft_with(analysis, self.config.draft.method, on_text)
    }

    /// `draft` by a given method (the evaluation measures them side by side). Every method's
    /// text goes through the guard; `Draft::raw` keeps what it was before.
    pub fn draft_with(
        &self,
        analysis: &Analysis,
        method: DraftMethod,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Draft> {
        // The complaint as drafts see it: untrusted markers and instructions neutralised,
        // personal data masked. It is also what the guard holds the draft to.
        let complaint = pii::mask(&guard::sanitize_complaint(&analysis.full));
        let suggestion = &analysis.suggestion;
        let unit = suggestion.units.first().map(|u| u.name.clone());
        let extra: Vec<String> = unit
            .iter()
            .chain(suggestion.categories.first().map(|c| &c.name))
            .cloned()
            .collect();
        let mut stream = Stream::default();
        let mut summary = None;
        let mut model_summary = None;
        let mut passages = Vec::new();
        let raw = match method {
            DraftMethod::Legacy => self.legacy_draft(analysis)?,
            DraftMethod::Retrieval => self.nearest_reply(analysis)?,
            DraftMethod::Template | DraftMethod::Restate => {
                let candidates = self.past_replies(analysis)?;
                let citations =
                    reply::select_citations(&complaint, &candidates, &self.config.draft.citations);
                passages = candidates.into_iter().map(|c| c.passage).collect();
                let sources = self.sources(&complaint, &passages).with_extra(&extra);
                let render = |summary: &str| -> Result<String> {
                    let order = suggestion.work_order.as_ref();
                    self.prompts.render(
                        "reply.jinja",
                        minijinja::context! {
                            summary => summary,
                            request => reply::request_for(order, summary),
                            unit => unit.clone().unwrap_or_default(),
                            citations => citations,
                        },
                    )
                };
                // The opening, up to the restatement, is known before the model runs.
                let opening = render(SUMMARY_MARK)?;
                if let Some(at) = opening.find(SUMMARY_MARK) {
                    let head = &opening[..at];
                    if let Some(end) = head.rfind(['\n', '。', '！', '？']) {
                        let end = end + head[end..].chars().next().map_or(0, char::len_utf8);
                        let checked = guard::check_draft(&head[..end], &sources);
                        stream.offer(&checked.text, on_text);
                    }
                }
                let fallback = reply::work_order_summary(
                    suggestion.work_order.as_ref(),
                    &complaint,
                    self.config.draft.summary.max_chars,
                );
                let chosen = match (&self.generator, method) {
                    (Some(generator), DraftMethod::Restate) if !stream.cancelled => {
                        let written = reply::without_findings(
                            &self.model_summary(generator.as_ref(), &complaint)?,
                        );
                        let ok = reply::grounded(
                            &written,
                            &complaint,
                            self.config.draft.summary.min_support,
                        );
                        model_summary = Some(written.clone());
                        if ok {
                            (written, SummarySource::Model)
                        } else {
                            (fallback, SummarySource::WorkOrder)
                        }
                    }
                    (None, DraftMethod::Restate) => {
                        return Err(Error::NotReady("no generator model loaded".into()))
                    }
                    _ => (fallback, SummarySource::WorkOrder),
                };
                let raw = render(&chosen.0)?;
                summary = Some(chosen);
                raw
            }
        };
        let sources = self.sources(&complaint, &passages).with_extra(&extra);
        let checked = guard::check_draft(&raw, &sources);
        stream.finish(&checked.text, on_text);
        Ok(Draft {
            method,
            text: checked.text,
            checks: checked.changes,
            raw,
            summary,
            model_summary,
            passages,
        })
    }

    /// Checks any text as a draft of `analysis` would be checked, against the same sources (the
    /// complaint as drafts see it, the unit directory, the suggested unit and category, and
    /// `passages`): the evaluation counts what the guard would change in each method's text.
    pub fn check_draft_text(
        &self,
        analysis: &Analysis,
        text: &str,
        passages: &[Passage],
    ) -> guard::Checked {
        let complaint = pii::mask(&guard::sanitize_complaint(&analysis.full));
        let suggestion = &analysis.suggestion;
        let extra: Vec<String> = suggestion
            .units
            .first()
            .map(|u| u.name.clone())
            .into_iter()
            .chain(suggestion.categories.first().map(|c| c.name.clone()))
            .collect();
        let sources = self.sources(&complaint, passages).with_extra(&extra);
        guard::check_draft(text, &sources)
    }

    /// `analyze` and `draft` together.
    pub fn triage(&self, complaint: &Complaint, with_draft: bool) -> Result<Suggestion> {
        let mut analysis = self.analyze(complaint)?;
        if with_draft && self.can_draft() {
            let started = Instant::now();
            let draft = self.draft(&analysis, &mut |_| true)?;
            let suggestion = &mut analysis.suggestion;
            suggestion.draft = Some(draft.text);
            suggestion.draft_checks = draft.checks;
            suggestion
                .timings_ms
                .insert("draft".into(), started.elapsed().as_secs_f64() * 1e3);
        }
        Ok(analysis.suggestion)
    }

    /// The restatement the model writes (`prompts/restate.jinja`), cleaned; through the chat
    /// template when one is configured.
    fn model_summary(&self, generator: &dyn Generator, complaint: &str) -> Result<String> {
        let config = &self.config.draft.summary;
        let head = text::truncate_chars(complaint, config.complaint_chars);
        let prompt = match &self.config.draft.chat_template {
            None => self.prompts.render(
                "restate.jinja",
                minijinja::context! { complaint => head, chat => false },
            )?,
            Some(template) => {
                let user = self.prompts.render(
                    "restate.jinja",
                    minijinja::context! { complaint => head, chat => true },
                )?;
                template.render(&[ChatMessage::user(user)], true)?
            }
        };
        let generation = generator.generate(&prompt, &config.params, &mut |_| true)?;
        Ok(reply::clean_summary(
            &pii::mask(&generation.text),
            config.max_chars,
        ))
    }

    /// The most similar past cases with an official reply (masked), as citation candidates.
    fn past_replies(&self, analysis: &Analysis) -> Result<Vec<ReplyCandidate>> {
        let k = self.config.draft.citations.cases;
        if k == 0 {
            return Ok(Vec::new());
        }
        let hits = self.search_others(analysis.id.as_deref(), &analysis.vector, k, &WITH_REPLY)?;
        Ok(hits
            .into_iter()
            .filter_map(|h| {
                Some(ReplyCandidate {
                    passage: Passage {
                        case_id: h.case.id.clone(),
                        text: pii::mask(h.case.reply.as_deref()?),
                    },
                    similarity: h.score,
                })
            })
            .collect())
    }

    /// The retrieval baseline: the most similar past case's official reply, masked.
    fn nearest_reply(&self, analysis: &Analysis) -> Result<String> {
        let hits = self.search_others(analysis.id.as_deref(), &analysis.vector, 1, &WITH_REPLY)?;
        Ok(hits
            .first()
            .and_then(|h| h.case.reply.as_deref())
            .map(pii::mask)
            .unwrap_or_default())
    }

    /// The drafts before issue 13: the model continues `prompts/reply_legacy.jinja` after the
    /// most similar past replies; cut and masked by `postprocess_draft`.
    fn legacy_draft(&self, analysis: &Analysis) -> Result<String> {
        let generator = self
            .generator
            .as_ref()
            .ok_or_else(|| Error::NotReady("no generator model loaded".into()))?;
        let legacy = &self.config.draft.legacy;
        let examples = if legacy.examples > 0 {
            self.search_others(
                analysis.id.as_deref(),
                &analysis.vector,
                legacy.examples,
                &WITH_REPLY,
            )?
        } else {
            Vec::new()
        };
        // Most similar last: small models copy the nearest example most.
        let examples: Vec<_> = examples
            .iter()
            .rev()
            .map(|h| {
                let clip = |s: &str| pii::mask(text::truncate_chars(s, legacy.example_chars));
                minijinja::context! {
                    complaint => clip(&h.case.full_text()),
                    reply => clip(h.case.reply.as_deref().unwrap_or_default()),
                    unit => h.case.unit.clone(),
                }
            })
            .collect();
        let suggestion = &analysis.suggestion;
        let prompt = self.prompts.render(
            "reply_legacy.jinja",
            minijinja::context! {
                complaint => pii::mask(text::truncate_chars(&analysis.full, legacy.complaint_chars)),
                category => suggestion.categories.first().map(|c| c.name.clone()),
                unit => suggestion.units.first().map(|u| u.name.clone()),
                examples => examples,
            },
        )?;
        let generation = generator.generate(&prompt, &legacy.params, &mut |_| true)?;
        Ok(postprocess_draft(&generation.text, legacy.max_chars))
    }
}

static WITH_REPLY: CaseFilter = CaseFilter {
    category: None,
    unit: None,
    district: None,
    time_from: None,
    time_to: None,
    labeled_only: false,
    with_reply: true,
    with_unit: false,
};

/// What has been passed to the caller: only checked text, and only while it is a beginning of
/// the checked draft.
#[derive(Default)]
struct Stream {
    emitted: String,
    cancelled: bool,
}

impl Stream {
    /// Passes on the part of `checked` beyond what was sent, when `checked` extends it.
    fn offer(&mut self, checked: &str, on_text: &mut dyn FnMut(&str) -> bool) {
        if self.cancelled || !checked.starts_with(&self.emitted) {
            return;
        }
        let new = &checked[self.emitted.len()..];
        if new.is_empty() {
            return;
        }
        if !on_text(new) {
            self.cancelled = true;
        }
        self.emitted = checked.to_string();
    }

    fn finish(&mut self, checked: &str, on_text: &mut dyn FnMut(&str) -> bool) {
        self.offer(checked, on_text);
    }
}

/// Trims the model's continuation to a clean draft: first section only, whole sentences within
/// the length cap, personal data masked (a small model invents phone numbers). Used by the
/// legacy method.
pub fn postprocess_draft(raw: &str, max_chars: usize) -> String {
    let section = raw.split("###").next().unwrap_or_default();
    let mut draft = text::truncate_chars(cut_repetition(section.trim()), max_chars).to_string();
    if draft.chars().count() == max_chars {
        // Cut back to the last sentence end, when there is one in the second half.
        if let Some(end) = draft.rfind(['。', '！', '!', '.']) {
            if draft[..end].chars().count() > max_chars / 2 {
                draft.truncate(end + draft[end..].chars().next().map_or(0, char::len_utf8));
            }
        }
    }
    pii::mask(draft.trim())
}

/// The text before the first clause that repeats an earlier one: a small model that starts
/// looping ("您好！您好！…") has said all it will say.
fn cut_repetition(text: &str) -> &str {
    let mut seen = std::collections::HashSet::new();
    let mut start = 0;
    for (i, ch) in text.char_indices() {
        if matches!(
            ch,
            '，' | '。' | '！' | '？' | '；' | '：' | ',' | '.' | '!' | '?' | ';' | '\n'
        ) {
            let clause = text[start..i].trim();
            if clause.chars().count() >= 2 && !seen.insert(clause) {
                return text[..start].trim_end();
            }
            start = i + ch.len_utf8();
        }
    }
    let last = text[start..].trim();
    if last.chars().count() >= 2 && seen.contains(last) {
        return text[..start].trim_end();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{postprocess_draft, Stream};
    use crate::pipeline::LegacyDraftConfig;

    #[test]
    fn stop_strings_end_sections_not_ordinary_replies() {
        // "来信" alone as a stop string cut every "您的来信已收悉" after four characters.
        let stops = LegacyDraftConfig::default().params.stop;
        let reply = "您好！您的来信已收悉。经核实，来信反映的问题已转交区城管局处理。";
        assert!(
            stops.iter().all(|s| !reply.contains(s.as_str())),
            "{stops:?}"
        );
        let next_section = "已转交处理。\n### 来信\n另一封";
        assert!(stops.iter().any(|s| next_section.contains(s.as_str())));
    }

    #[test]
    fn loops_are_cut_at_the_first_repeat() {
        assert_eq!(postprocess_draft("您好！您好！您好！您好", 300), "您好！");
        assert_eq!(
            postprocess_draft(
                "已收悉。执法人员进行了检查，执法人员进行了检查，执法人员",
                300
            ),
            "已收悉。执法人员进行了检查，"
        );
        assert_eq!(
            postprocess_draft("您好，已处理。谢谢！", 300),
            "您好，已处理。谢谢！"
        );
    }

    #[test]
    fn draft_is_cut_at_next_section_and_masked() {
        let raw = " 您好，已转交A市城管局处理，联系电话13812345678。\n### 来信\n另一个";
        assert_eq!(
            postprocess_draft(raw, 300),
            "您好，已转交A市城管局处理，联系电话[手机号]。"
        );
    }

    #[test]
    fn long_draft_ends_on_a_sentence() {
        let raw = "第一句话说完了。第二句话没有说完就";
        assert_eq!(postprocess_draft(raw, 12), "第一句话说完了。");
    }

    #[test]
    fn only_beginnings_of_the_checked_draft_are_streamed() {
        let mut sent = Vec::new();
        let mut stream = Stream::default();
        let mut on_text = |s: &str| {
            sent.push(s.to_string());
            true
        };
        stream.offer("您好！\n", &mut on_text);
        // The guard changed what was sent: nothing more is streamed, the final text rules.
        stream.finish("【核实情况与处理结果】。", &mut on_text);
        assert_eq!(sent, vec!["您好！\n"]);
        let mut sent = Vec::new();
        let mut stream = Stream::default();
        let mut on_text = |s: &str| {
            sent.push(s.to_string());
            true
        };
        stream.offer("您好！\n", &mut on_text);
        stream.finish("您好！\n您反映的问题已收悉。", &mut on_text);
        assert_eq!(sent, vec!["您好！\n", "您反映的问题已收悉。"]);
    }
}
