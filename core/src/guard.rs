//! The faithfulness guard: what a draft (or a work order) may state, and what it does with the
//! rest. Applied to every draft after generation, before anyone sees it.
//!
//! The contract (DESIGN.md, "Drafts"): outside a slot `【…】` and a citation `「…」(case id)`, a
//! draft states only what the complaint, the unit directory or a passage it cites says. So:
//! - every **number** (phone, date, amount, time limit, document number, code), **handle**
//!   (网友“A0001234”, UU008779), **person** (胡某某书记), **place** and **organisation** name
//!   outside the markers must occur in those sources; otherwise it becomes a slot (`【日期】`,
//!   `【联系电话】`, `【地点】`, …) or, for handles and person names, is removed;
//! - an **investigative statement** (经核实, 经调查, 现场查看, 未发现, 已处理, 已责成, 我局, …, the
//!   findings and actions only the handling unit can report) may appear only inside a slot or a
//!   citation: outside them its sentence becomes `【核实情况与处理结果】`;
//! - a **citation** must name a case id among the passages the draft was offered and quote that
//!   passage exactly (gaps written `…`); otherwise it is removed;
//! - stray markers (an unclosed `【`, a `###`) are removed.
//!
//! `check_draft` returns the repaired text and one `DraftCheck` per change, which the response
//! reports as `draft_checks`. The checks are deliberately literal (substring matches on folded
//! text): a reviewer can see why each change was made, and a fact that is not written in a source
//! is not supported, however plausible.
//!
//! `sanitize_complaint` is the other half: a complaint is untrusted text, so the markers this
//! contract gives meaning to, prompt section markers and instruction-like phrases are neutralised
//! before it goes into a prompt, and a complaint can never create a slot, a citation or a section.

use crate::places;
use crate::text::{self, jieba};
use crate::units::UnitDirectory;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::LazyLock;

/// A past reply the draft was offered, which it may cite as `「passage」(case_id)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    pub case_id: String,
    pub text: String,
}

/// What a draft may state: the complaint, the unit directory's units, extra strings the pipeline
/// vouches for (the suggested unit, the category's name) and the passages it was offered.
///
/// Districts are held to the complaint: every district of the directory occurs in it, so the
/// directory alone would let a draft about A2区 speak of "M3县广播电视台". A district or city in
/// a draft must be named by the complaint (or be a parent of one it names), by an extra string or
/// by a cited passage.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    directory: &'a UnitDirectory,
    names: Cow<'a, DirectoryNames>,
    complaint: String,
    /// Folded complaint, extra strings and the complaint's districts with their parents.
    local: String,
    passages: Vec<Passage>,
}

/// The directory's names as the guard reads them (folded), for one directory: its districts'
/// names with their parents, and its units' names, aliases and contacts. A pipeline builds them
/// once and shares them between requests; folding a few thousand unit names cost more than the
/// checks of a work order.
#[derive(Debug, Clone)]
pub struct DirectoryNames {
    /// Per district: its folded names, and the lines its parents add to the sources.
    districts: Vec<(Vec<String>, String)>,
    /// The units' folded names, aliases and contacts, one per line.
    units: String,
}

impl DirectoryNames {
    pub fn new(directory: &UnitDirectory) -> Self {
        let districts = directory
            .districts
            .iter()
            .map(|d| {
                let names = std::iter::once(&d.name)
                    .chain(&d.aliases)
                    .filter(|n| !n.is_empty())
                    .map(|n| text::fold(n))
                    .collect();
                let mut parents = String::new();
                for p in directory.lineage(&d.name).iter().skip(1) {
                    parents.push('\n');
                    parents.push_str(&text::fold(p));
                }
                (names, parents)
            })
            .collect();
        let mut units = String::new();
        for u in &directory.units {
            for s in std::iter::once(&u.name)
                .chain(&u.aliases)
                .chain(u.contact.as_ref())
            {
                units.push('\n');
                units.push_str(&text::fold(s));
            }
        }
        Self { districts, units }
    }
}

impl<'a> Sources<'a> {
    /// `complaint` as the pipeline saw it (title + text), `passages` the past replies the prompt
    /// offered for citation.
    pub fn new(complaint: &str, directory: &'a UnitDirectory, passages: &[Passage]) -> Self {
        let names = Cow::Owned(DirectoryNames::new(directory));
        Self::with_names(complaint, directory, names, passages)
    }

    /// `new` with the directory's names already folded (`names` is `DirectoryNames::new` of
    /// `directory`).
    pub fn with_names(
        complaint: &str,
        directory: &'a UnitDirectory,
        names: Cow<'a, DirectoryNames>,
        passages: &[Passage],
    ) -> Self {
        let folded = text::fold(complaint);
        let mut local = folded.clone();
        for (district, parents) in &names.districts {
            if district.iter().any(|n| folded.contains(n.as_str())) {
                local.push_str(parents);
            }
        }
        Self {
            directory,
            names,
            complaint: folded,
            local,
            passages: passages.to_vec(),
        }
    }

    /// Adds strings the draft may state (e.g. the suggested unit's name, the category's name).
    pub fn with_extra<S: AsRef<str>>(mut self, extra: &[S]) -> Self {
        for s in extra {
            self.local.push('\n');
            self.local.push_str(&text::fold(s.as_ref()));
        }
        self
    }
}

/// A kind of name the guard checks.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameKind {
    Place,
    Organisation,
}

/// Why a citation was removed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CitationProblem {
    /// `「…」` with no case id after it.
    NoCaseId,
    /// The case id is not among the passages the draft was offered.
    UnknownCase,
    /// The quoted text is not in that case's passage.
    NotInPassage,
}

/// One change the guard made. `replacement` is what the text now says there ("" = removed).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DraftCheck {
    /// A number (date, phone, amount, time limit, document number, code) no source has.
    UnsupportedNumber { text: String, replacement: String },
    /// A user handle (网友“A0001234”, UU008779) no source has.
    UnsupportedHandle { text: String, replacement: String },
    /// A person's name (before a title such as 书记, 局长) no source has.
    UnsupportedPerson { text: String, replacement: String },
    /// A place or organisation name no source has.
    UnsupportedName {
        text: String,
        name_kind: NameKind,
        replacement: String,
    },
    /// A finding or action of the handling unit stated outside a slot or citation.
    InvestigativeClaim {
        sentence: String,
        marker: String,
        replacement: String,
    },
    /// A citation that does not check out; it was removed.
    InvalidCitation {
        text: String,
        case_id: Option<String>,
        problem: CitationProblem,
    },
    /// A slot whose label is longer than `MAX_SLOT_CHARS`: a statement posing as a slot.
    SlotTooLong { text: String, replacement: String },
    /// An unpaired 【】「」 or a "###"; removed.
    StrayMarker { text: String },
}

/// The repaired text and what was changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checked {
    pub text: String,
    pub changes: Vec<DraftCheck>,
}

/// How unsupported content is repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Drafts: unsupported facts and claims become slots for the handling unit to fill.
    Slot,
    /// Work-order fields (a title, a request): they are removed, a field has no slots.
    Remove,
}

/// The slot an investigative sentence becomes.
pub const FINDINGS_SLOT: &str = "【核实情况与处理结果】";
/// Longest slot label, in characters.
pub const MAX_SLOT_CHARS: usize = 30;

/// Checks a reply draft against its sources and repairs it (see the module docs).
pub fn check_draft(draft: &str, sources: &Sources) -> Checked {
    check(draft, sources, Repair::Slot)
}

/// Most passes `check` makes over its own output (it stops at the first that changes nothing).
const MAX_PASSES: usize = 4;

/// Checks any generated text; `repair` says what becomes of unsupported content.
///
/// The guard is idempotent: the repaired text passes it unchanged. One pass is not always enough:
/// of two overlapping facts only the longer is checked ("10个工作日内报分区县市局": the time
/// limit), and the other ("内报分区县市局", an organisation no source names) shows only once the
/// first became a slot. So the checked text is checked again until nothing changes.
pub fn check(draft: &str, sources: &Sources, repair: Repair) -> Checked {
    let mut checked = check_once(draft, sources, repair);
    for _ in 1..MAX_PASSES {
        let again = check_once(&checked.text, sources, repair);
        if again.changes.is_empty() {
            break;
        }
        checked.text = again.text;
        checked.changes.extend(again.changes);
    }
    checked
}

/// One pass of `check`.
fn check_once(draft: &str, sources: &Sources, repair: Repair) -> Checked {
    let mut changes = Vec::new();
    let segments = parse(draft, &mut changes);
    // Citations first: a valid one makes its passage a source for the rest of the draft.
    let mut cited: Vec<&Passage> = Vec::new();
    let mut kept = Vec::new();
    for segment in segments {
        match segment {
            Segment::Citation {
                quote,
                case_id,
                raw,
            } => match verify_citation(&quote, case_id.as_deref(), &sources.passages) {
                Ok(passage) => {
                    if !cited.iter().any(|p| p.case_id == passage.case_id) {
                        cited.push(passage);
                    }
                    kept.push(Segment::Citation {
                        quote,
                        case_id,
                        raw,
                    });
                }
                Err(problem) => changes.push(DraftCheck::InvalidCitation {
                    text: raw,
                    case_id,
                    problem,
                }),
            },
            Segment::Slot(label) if label.chars().count() > MAX_SLOT_CHARS => {
                changes.push(DraftCheck::SlotTooLong {
                    text: format!("【{label}】"),
                    replacement: slot_or_nothing(FINDINGS_SLOT, repair),
                });
                if repair == Repair::Slot {
                    let label = FINDINGS_SLOT
                        .trim_start_matches('【')
                        .trim_end_matches('】');
                    kept.push(Segment::Slot(label.to_string()));
                }
            }
            other => kept.push(other),
        }
    }
    let mut local = sources.local.clone();
    for p in &cited {
        local.push('\n');
        local.push_str(&text::fold(&p.text));
    }
    let ctx = Context {
        directory: sources.directory,
        support: &[&local, &sources.names.units],
        local: &[&local],
        complaint: &sources.complaint,
        repair,
    };
    let mut out = String::new();
    for segment in kept {
        match segment {
            Segment::Text(t) => out.push_str(&check_text(&t, &ctx, &mut changes)),
            Segment::Slot(label) => {
                out.push('【');
                out.push_str(&label);
                out.push('】');
            }
            Segment::Citation { raw, .. } => out.push_str(&raw),
        }
    }
    let mut text = merge_slots(&out);
    if repair == Repair::Remove && !changes.is_empty() {
        text = text
            .trim_end_matches(['，', ',', '、', '；', ';', ' '])
            .to_string();
    }
    Checked { text, changes }
}

fn slot_or_nothing(slot: &str, repair: Repair) -> String {
    match repair {
        Repair::Slot => slot.to_string(),
        Repair::Remove => String::new(),
    }
}

/// Findings slots in a row (two replaced sentences, "【…】。【…】") become one.
fn merge_slots(text: &str) -> String {
    let mut out = text.to_string();
    for joint in ["", "。", "\n", "。\n"] {
        let double = format!("{FINDINGS_SLOT}{joint}{FINDINGS_SLOT}");
        while out.contains(&double) {
            out = out.replace(&double, FINDINGS_SLOT);
        }
    }
    out
}

enum Segment {
    Text(String),
    Slot(String),
    Citation {
        quote: String,
        case_id: Option<String>,
        raw: String,
    },
}

/// `「quote」` and the case id written right after it: (id) （id） [id] ［id］, optionally
/// "案例"/"case"/"编号" in front of the id.
static CASE_ID_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^\s*[（(\[［]\s*(?:案例|案件|编号|来信|case|Case|id|ID)?\s*[:：#]?\s*([A-Za-z0-9][A-Za-z0-9_\-]{0,39})\s*[）)\]］]",
    )
    .expect("case id pattern")
});

/// Splits a draft into text, slots and citations; unpaired markers and "###" are dropped.
fn parse(draft: &str, changes: &mut Vec<DraftCheck>) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = draft;
    while let Some(c) = rest.chars().next() {
        match c {
            '【' => match rest.find('】') {
                Some(end) if !rest[3..end].contains(['【', '「', '」']) => {
                    flush(&mut text, &mut out);
                    out.push(Segment::Slot(rest[3..end].to_string()));
                    rest = &rest[end + 3..];
                    continue;
                }
                _ => changes.push(DraftCheck::StrayMarker { text: "【".into() }),
            },
            '「' => match rest.find('」') {
                Some(end) if !rest[3..end].contains(['「', '【', '】']) => {
                    flush(&mut text, &mut out);
                    let quote = rest[3..end].to_string();
                    let after = &rest[end + 3..];
                    let (case_id, used) = match CASE_ID_RE.captures(after) {
                        Some(c) => (Some(c[1].to_string()), c[0].len()),
                        None => (None, 0),
                    };
                    let raw_end = end + 3 + used;
                    out.push(Segment::Citation {
                        quote,
                        case_id,
                        raw: rest[..raw_end].to_string(),
                    });
                    rest = &rest[raw_end..];
                    continue;
                }
                _ => changes.push(DraftCheck::StrayMarker { text: "「".into() }),
            },
            '】' | '」' => changes.push(DraftCheck::StrayMarker {
                text: c.to_string(),
            }),
            '#' if rest.starts_with("###") => {
                changes.push(DraftCheck::StrayMarker { text: "###".into() });
                rest = &rest[3..];
                continue;
            }
            _ => text.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    flush(&mut text, &mut out);
    out
}

fn flush(text: &mut String, out: &mut Vec<Segment>) {
    if !text.is_empty() {
        out.push(Segment::Text(std::mem::take(text)));
    }
}

fn verify_citation<'a>(
    quote: &str,
    case_id: Option<&str>,
    passages: &'a [Passage],
) -> Result<&'a Passage, CitationProblem> {
    let id = case_id.ok_or(CitationProblem::NoCaseId)?;
    let passage = passages
        .iter()
        .find(|p| p.case_id == id)
        .ok_or(CitationProblem::UnknownCase)?;
    let haystack = text::fold(&passage.text);
    // Each piece between ellipses must be in the passage, in order.
    let mut at = 0;
    let pieces: Vec<String> = quote
        .split(['…', '⋯'])
        .flat_map(|p| p.split("..."))
        .map(text::fold)
        .filter(|p| !p.is_empty())
        .collect();
    if pieces.is_empty() {
        return Err(CitationProblem::NotInPassage);
    }
    for piece in pieces {
        match haystack[at..].find(&piece) {
            Some(i) => at += i + piece.len(),
            None => return Err(CitationProblem::NotInPassage),
        }
    }
    Ok(passage)
}

struct Context<'a> {
    directory: &'a UnitDirectory,
    /// What facts are checked against: the sources with the directory's units.
    support: &'a [&'a str],
    /// What districts and cities are checked against (no directory).
    local: &'a [&'a str],
    complaint: &'a str,
    repair: Repair,
}

/// Markers of findings and actions only the handling unit can report. Found in the official
/// replies of `replies.jsonl` (the most frequent 已…, 经…, 现场…, 责令… phrases) and the issue's
/// examples; intake phrases (已收悉, 已转交, 已受理, 已登记) are not among them.
static CLAIM_RE: LazyLock<Regex> = LazyLock::new(|| {
    let verbs = "处理|解决|责成|督促|要求|责令|安排|完成|纳入|列入|办理|进行|启动|建成|作出|做出|告知|联系|明确|成立|承诺|恢复|组织|发函|委托|制定|采取|协调|上报|整改|停止|停工|暂停|拆除|立案|修复|安装|同意|移交|通知|介入|依法|规划|出台|落实|到位|发放|清理|查处|处罚|罚款|约谈|核实|调查|派|开展|部署|下达|签订|支付|退还|补发|回复|答复|实现|开通|完工|交付|做好|批复|审批|核查|检查|查看|整治|维修|疏通|关闭|取缔|清除|收回|撤销|对|于|与|向|将|按照|全部|基本|全面|多次|督办|反馈|研究|确定|形成|召开|收集|申请|协商|解释|说明|取得|达成|核准|检测|监测|处置|维护|更换|铺设|硬化|施工|投入|拨付|兑现|结案|办结";
    let pattern = format!(
        "经(?:过)?(?:查|核实|核查|调查|了解|审查|检查|排查|勘查|勘察|走访|研究|协调|调解|现场|实地|多方|多次|我|本|区|市|县|镇|街道|相关|有关|工作人员)\
         |调查(?:核实|处理|了解|发现|显示|结果|情况)|核实(?:情况|后|发现|结果)|处理(?:结果|情况)|查实|不属实|情况属实|属实\
         |现场(?:查看|核实|核查|检查|调查|勘查|勘察|察看|了解|进行|监察|走访|处置|检测)|实地(?:查看|调查|勘察|查勘|走访|核实|察看|了解)\
         |(?:未|没有|并未|均未)(?:发现|检测到|查到)|不存在|(?:均|完全|基本)?符合(?:规定|要求|标准|政策|条件)|合法合规\
         |已(?:经)?(?:{verbs})|(?:立即|及时|迅速|马上)(?:组织|安排|派|赶赴|前往|进行|要求|责令|整改|处理|开展|联系|核实|调查)\
         |高度重视|责成|责令|约谈|立案查处|督促(?:其|物业|开发|施工|相关|该|业主|学校|企业|公司|单位)\
         |我(?:局|委|办|校|院|司|单位|中心|所|队|站|厅|部|县|区|市|镇|街道|公司)\
         |(?:预计|计划|拟)(?:于|在|将)?[^。！？；]{{0,12}}(?:完成|完工|竣工|通车|解决|到位|开通|交付|投入使用)\
         |将于|目前(?:该|已|正在)|正在(?:施工|处理|办理|调查|核实|推进|进行|整改|协调|维修)\
         |(?:答复|回复)如下|情况如下"
    );
    Regex::new(&pattern).expect("claim pattern")
});

/// Whether `text` states a finding or an action only a handling unit can report (经核实, 已处理,
/// 我局, …): the markers the guard turns into a slot outside slots and citations.
pub fn states_finding(text: &str) -> bool {
    CLAIM_RE.is_match(text)
}

/// Checks and repairs one stretch of text outside slots and citations.
fn check_text(text: &str, ctx: &Context, changes: &mut Vec<DraftCheck>) -> String {
    let mut out = String::new();
    // A field (Repair::Remove) loses only the clause with the claim; a draft the sentence.
    let ends: &[char] = match ctx.repair {
        Repair::Slot => &['。', '！', '？', '!', '?', '；', ';', '\n'],
        Repair::Remove => &['。', '！', '？', '!', '?', '；', ';', '\n', '，', ','],
    };
    for sentence in text.split_inclusive(ends) {
        if let Some(marker) = unsupported_claim(sentence, ctx.complaint) {
            let replacement = match ctx.repair {
                Repair::Slot => {
                    // Keep the sentence's end mark (a newline keeps the layout).
                    let end = sentence
                        .chars()
                        .last()
                        .filter(|c| "。！？!?；;\n".contains(*c));
                    let mut r = FINDINGS_SLOT.to_string();
                    if let Some(c) = end {
                        r.push(if c == '\n' { '\n' } else { '。' });
                    }
                    r
                }
                Repair::Remove => String::new(),
            };
            changes.push(DraftCheck::InvestigativeClaim {
                sentence: sentence.trim().to_string(),
                marker,
                replacement: replacement.clone(),
            });
            out.push_str(&replacement);
        } else {
            out.push_str(&check_facts(sentence, ctx, changes));
        }
    }
    out
}

/// The first investigative marker of a sentence that the complaint itself does not say.
fn unsupported_claim(sentence: &str, complaint: &str) -> Option<String> {
    for m in CLAIM_RE.find_iter(sentence) {
        // The caller's own words restated ("物业已多次要求…" from the complaint) are no claim
        // of the unit: the marker with the two characters after it is in the complaint.
        let window: String = sentence[m.start()..]
            .chars()
            .take(m.as_str().chars().count() + 2)
            .collect();
        let window = text::fold(&window);
        if complaint.contains(&window) || complaint.contains(&text::fold(sentence.trim())) {
            continue;
        }
        return Some(m.as_str().to_string());
    }
    None
}

/// One fact found in a sentence: its byte range and what to do if unsupported.
struct Fact {
    start: usize,
    end: usize,
    /// What is looked up in the sources.
    key: String,
    kind: FactKind,
}

#[derive(Clone, Copy)]
enum FactKind {
    Number,
    Handle,
    /// The name part of a "name + title" ("胡某某" of "胡某某书记").
    Person,
    Name(NameKind),
    /// A district or city of the directory: checked against the complaint, not the directory.
    District,
    /// Letters and digits: a user id, a licence plate, a case number.
    Code,
}

/// A number with its unit. Digits preceded by an ASCII letter belong to a code (checked whole).
static NUMBER_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"[0-9０-９]+(?:[.．:：/\-－~～][0-9０-９]+)*(?:\s*(?:万元|亿元|元|万|亿|%|％|个工作日|工作日|个月|年|月|日|号|时|点|分|秒|天|小时|周|岁|平方米|平米|米|公里|千米|吨|户|人|栋|楼|层|次|件|个|台|辆|份|条|期|批|项))?|[零〇一二三四五六七八九十百千两]+(?:个工作日|个月|工作日|日内|天|小时|周|元|万元)",
    )
    .expect("number pattern")
});
/// A document number: 〔2019〕2号, ﹝2019﹞12号, [2019]3号.
static DOC_NUMBER_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[〔﹝\[［(（][0-9０-９]{4}[〕﹞\]］)）]\s*(?:第)?[0-9０-９]+号")
        .expect("doc pattern")
});
/// A code of letters and digits: UU008779, A00023583, S1 (a road), 楚C12345's C12345.
static CODE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z]+[0-9]+[A-Za-z0-9]*").expect("code pattern"));
/// 网友“…”: a handle in quotes after 网友/用户/市民.
static HANDLE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:网友|用户|市民)\s*[“"‘'《]([^”"’'》\n]{1,30})[”"’'》]"#)
        .expect("handle pattern")
});
/// Titles a person's name comes before.
static TITLE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        "书记|市长|县长|区长|镇长|乡长|村长|局长|主任|校长|院长|厅长|处长|科长|所长|站长|队长|经理|董事长|部长|主席|老师|医生|律师|警官|同志|先生|女士",
    )
    .expect("title pattern")
});

/// Finds the facts of a sentence, checks them, and repairs the unsupported ones.
fn check_facts(sentence: &str, ctx: &Context, changes: &mut Vec<DraftCheck>) -> String {
    let mut facts: Vec<Fact> = Vec::new();
    let push = |facts: &mut Vec<Fact>, start: usize, end: usize, key: &str, kind| {
        facts.push(Fact {
            start,
            end,
            key: key.to_string(),
            kind,
        });
    };
    for c in HANDLE_RE.captures_iter(sentence) {
        let g = c.get(1).expect("group");
        // The whole "网友“…”" goes; "网友" is put back by the repair.
        let whole = c.get(0).expect("match");
        push(
            &mut facts,
            whole.start(),
            whole.end(),
            g.as_str(),
            FactKind::Handle,
        );
    }
    for m in DOC_NUMBER_RE.find_iter(sentence) {
        push(&mut facts, m.start(), m.end(), m.as_str(), FactKind::Number);
    }
    for m in CODE_RE.find_iter(sentence) {
        push(&mut facts, m.start(), m.end(), m.as_str(), FactKind::Code);
    }
    // Numbers written next to each other form one fact: "2019年4月25日", "5月5日".
    let mut numbers: Vec<(usize, usize)> = Vec::new();
    for m in NUMBER_RE.find_iter(sentence) {
        if sentence[..m.start()]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphabetic())
        {
            continue; // part of a code or a district name such as A3区
        }
        match numbers.last_mut() {
            Some(last) if last.1 == m.start() => last.1 = m.end(),
            _ => numbers.push((m.start(), m.end())),
        }
    }
    for (s, e) in numbers {
        push(&mut facts, s, e, &sentence[s..e], FactKind::Number);
    }
    for m in TITLE_RE.find_iter(sentence) {
        if let Some(start) = person_name_before(sentence, m.start()) {
            let name = &sentence[start..m.start()];
            push(&mut facts, start, m.start(), name, FactKind::Person);
        }
    }
    // Places and organisations: the directory's districts are always supported.
    let found = places::extract(sentence, ctx.directory);
    for p in &found {
        let kind = if p.level <= places::PlaceLevel::District {
            FactKind::District
        } else {
            FactKind::Name(NameKind::Place)
        };
        push(&mut facts, p.start, p.end, &p.name, kind);
    }
    for o in places::extract_organisations(sentence, &found) {
        push(
            &mut facts,
            o.start,
            o.end,
            &o.name,
            FactKind::Name(NameKind::Organisation),
        );
    }
    // Overlapping facts: the longer one stands for both ("神农大道8号" is one place, not a road
    // and a number), on a tie the one found first (handles before numbers before names).
    let mut kept: Vec<Fact> = Vec::new();
    let mut order: Vec<usize> = (0..facts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(facts[i].end - facts[i].start));
    let mut facts: Vec<Option<Fact>> = facts.into_iter().map(Some).collect();
    for i in order {
        let f = facts[i].take().expect("each fact once");
        if !kept.iter().any(|k| k.start < f.end && f.start < k.end) {
            kept.push(f);
        }
    }
    let mut facts = kept;
    facts.sort_by_key(|f| f.start);

    let mut out = String::new();
    let mut at = 0;
    for fact in facts {
        let sources = match fact.kind {
            FactKind::District => ctx.local,
            _ => ctx.support,
        };
        if supported(&fact, sources) {
            continue;
        }
        let original = &sentence[fact.start..fact.end];
        let replacement = match (fact.kind, ctx.repair) {
            (FactKind::Handle, _) => original
                .split(['“', '"', '‘', '\'', '《'])
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            (FactKind::Person, _) => String::new(),
            (_, Repair::Remove) => String::new(),
            (FactKind::Number, Repair::Slot) => number_slot(original).to_string(),
            (FactKind::Code, Repair::Slot) => "【编号】".to_string(),
            (FactKind::Name(NameKind::Place) | FactKind::District, Repair::Slot) => {
                "【地点】".to_string()
            }
            (FactKind::Name(NameKind::Organisation), Repair::Slot) => "【单位】".to_string(),
        };
        out.push_str(&sentence[at..fact.start]);
        out.push_str(&replacement);
        at = fact.end;
        let text = original.to_string();
        changes.push(match fact.kind {
            FactKind::Number | FactKind::Code => {
                DraftCheck::UnsupportedNumber { text, replacement }
            }
            FactKind::Handle => DraftCheck::UnsupportedHandle { text, replacement },
            FactKind::Person => DraftCheck::UnsupportedPerson { text, replacement },
            FactKind::Name(name_kind) => DraftCheck::UnsupportedName {
                text,
                name_kind,
                replacement,
            },
            FactKind::District => DraftCheck::UnsupportedName {
                text,
                name_kind: NameKind::Place,
                replacement,
            },
        });
    }
    out.push_str(&sentence[at..]);
    out
}

/// The slot an unsupported number becomes, by what it looks like.
fn number_slot(number: &str) -> &'static str {
    let digits = number.chars().filter(char::is_ascii_digit).count();
    if DOC_NUMBER_RE.is_match(number) {
        "【文号】"
    } else if number.contains(['年', '月', '日', '号']) && !number.contains("工作日") {
        "【日期】"
    } else if number.contains(['元', '万', '亿']) {
        "【金额】"
    } else if number.contains(['天', '周'])
        || number.contains("工作日")
        || number.contains("小时")
        || number.contains("个月")
    {
        "【办理时限】"
    } else if digits >= 7 {
        "【联系电话】"
    } else {
        "【数字】"
    }
}

/// Whether a fact occurs in one of the sources' texts.
fn supported(fact: &Fact, texts: &[&str]) -> bool {
    let key = text::fold(&fact.key);
    key.is_empty() || texts.iter().any(|text| occurs(fact, &key, text))
}

/// Whether a fact (`key`, folded) occurs in `support`.
fn occurs(fact: &Fact, key: &str, support: &str) -> bool {
    match fact.kind {
        FactKind::Number => contains_number(support, key),
        FactKind::Code => support.contains(key),
        FactKind::Handle | FactKind::Person | FactKind::District => support.contains(key),
        FactKind::Name(_) => {
            if support.contains(key) {
                return true;
            }
            // The extractor may have taken a word too many on the left ("辖区桂花坪街道"): the
            // name still counts as supported if a shorter tail with at least two characters
            // before its suffix is in a source.
            let suffix = places::suffix_of(key).map_or(0, |s| s.chars().count());
            let chars: Vec<char> = key.chars().collect();
            (1..chars.len())
                .take_while(|&k| chars.len() - k >= suffix + 2)
                .any(|k| support.contains(&chars[k..].iter().collect::<String>()))
        }
    }
}

/// `number` occurs in `haystack` with no digit right before or after it (so "25日" is not
/// supported by "125日", nor "2019" by "20190425").
fn contains_number(haystack: &str, number: &str) -> bool {
    let starts_digit = number.starts_with(|c: char| c.is_ascii_digit());
    let ends_digit = number.ends_with(|c: char| c.is_ascii_digit());
    haystack.match_indices(number).any(|(i, m)| {
        let before = haystack[..i].chars().last();
        let after = haystack[i + m.len()..].chars().next();
        let glued_before = starts_digit && before.is_some_and(|c| c.is_ascii_digit());
        let glued_after = ends_digit && after.is_some_and(|c| c.is_ascii_digit());
        !glued_before && !glued_after
    })
}

/// Where a person's name before a title starting at `title_start` begins, if there is one:
/// the word right before it when jieba takes it for a person's name (nr) or a word it does not
/// know, of two or three characters, or a lone surname.
fn person_name_before(sentence: &str, title_start: usize) -> Option<usize> {
    let head = &sentence[..title_start];
    let from = head.char_indices().rev().nth(5).map_or(0, |(i, _)| i);
    let window = &head[from..];
    let tags = jieba().tag(window, true);
    let last = tags.last()?;
    let chars = last.word.chars().count();
    let is_name = match last.tag {
        "nr" | "nrfg" | "nrt" => (1..=3).contains(&chars),
        "x" => (2..=3).contains(&chars),
        _ => false,
    };
    if !is_name
        || !last
            .word
            .chars()
            .all(|c| c.is_alphabetic() && !c.is_ascii())
    {
        return None;
    }
    Some(title_start - last.word.len())
}

/// Applies the guard to a work order's text fields (`Repair::Remove`: a field has no slots): an
/// unsupported fact or claim in the title or request is removed, a location not written in the
/// complaint is dropped. Rule-built work orders pass unchanged (they only copy the complaint);
/// this is for titles or requests a model writes.
pub fn check_work_order(
    order: &crate::work_order::WorkOrder,
    sources: &Sources,
) -> (crate::work_order::WorkOrder, Vec<DraftCheck>) {
    let mut changes = Vec::new();
    let mut field = |text: &str| {
        let checked = check(text, sources, Repair::Remove);
        changes.extend(checked.changes);
        checked.text
    };
    let title = field(&order.title);
    let request = field(&order.request);
    let location = match &order.location {
        Some(l) if !sources.complaint.contains(&text::fold(&l.text)) => {
            changes.push(DraftCheck::UnsupportedName {
                text: l.text.clone(),
                name_kind: NameKind::Place,
                replacement: String::new(),
            });
            None
        }
        other => other.clone(),
    };
    let order = crate::work_order::WorkOrder {
        title,
        location,
        request,
        flags: order.flags.clone(),
    };
    (order, changes)
}

/// Instruction-like phrases a complaint may carry to steer the model.
static INSTRUCTION_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?im)(?:忽略|无视|忘记|忘掉|不要理会|跳过)(?:掉)?(?:以上|上面|上述|之前|前面|先前|所有|全部)?(?:的)?(?:所有|全部)?(?:指令|指示|提示词?|要求|规则|设定|对话)|ignore\s+(?:all\s+|any\s+)?(?:the\s+)?(?:previous|above|prior|earlier)\s+(?:instructions?|prompts?|rules)|disregard\s+(?:all\s+)?(?:the\s+)?(?:previous|above|prior)\s+\w+|system\s*prompt|you\s+are\s+now|你现在是|从现在起你是|扮演|(?:新|系统)(?:的)?指令|以下是(?:新的)?指令|(?:请)?(?:直接)?输出(?:以下|如下)(?:内容)?|^\s*(?:system|assistant|user|model|系统|助手|答复|回复|来信)\s*[:：]",
    )
    .expect("instruction pattern")
});

/// A section header a complaint writes as if it were the prompt's ("### 答复") and the sentence
/// it opens: a fake reply for the model to continue with, not for the agency. What follows
/// that sentence is kept (complaints go on after such injections).
static PSEUDO_SECTION_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)#{2,}\s*(?:答复|回复|来信|system|assistant|user|model|系统|助手)\s*[:：]?\s*[^。！？!?\n]*[。！？!?]?",
    )
    .expect("pseudo-section pattern")
});

/// Makes a complaint safe to put in a prompt and to restate in a draft: 【】 become [], 「」『』
/// become “”, every section header the complaint writes as the prompt's and the sentence it opens
/// ("### 答复\n已处理。") become "（…）" (a model restating the complaint copied such a fake reply
/// word for word), other prompt section and chat markers ("###", "<start_of_turn>", …) are
/// removed, and instruction-like phrases ("忽略以上指令", "ignore previous instructions", a line
/// opening with "答复：") are replaced by "（…）". The complaint's content is otherwise kept.
pub fn sanitize_complaint(complaint: &str) -> String {
    let complaint = PSEUDO_SECTION_RE.replace_all(complaint, "（…）");
    let mut out: String = complaint
        .chars()
        .map(|c| match c {
            '【' => '[',
            '】' => ']',
            '「' | '『' => '“',
            '」' | '』' => '”',
            c => c,
        })
        .collect();
    for marker in crate::prompt::STRUCTURE_MARKERS {
        out = out.replace(marker, " ");
    }
    // "#" runs of any length could still open a Markdown section.
    while out.contains("##") {
        out = out.replace("##", "#");
    }
    INSTRUCTION_RE.replace_all(&out, "（…）").into_owned()
}

#[cfg(test)]
mod tests;
