//! The unit(s) an official reply names as handling a complaint: gold labels for unit routing.
//!
//! Official replies follow a few set phrasings: "经A5区教育局、黎托街道核实", "A3区洋湖街道高度重视",
//! "市住建局及时将您反映的问题交由市房屋交易管理中心办理", a signature "A7县交通运输局 2019年5月9日",
//! "我局…". This module reads those, and only those: a unit is a *handler* when a phrase says it
//! investigated, acted or signed the reply; a unit the case was passed to is *referred* (the handler
//! only when no other unit is); every other unit is *mentioned* and is no gold. Precision comes
//! first, because these labels grade the router: when no phrase says who handled the case, or a
//! name cannot be tied to one district, the reply gets no handler rather than a guess.
//!
//! Names are normalised with [`UnitAliases`] (data, `data/unit_aliases.toml`: "住建局" =
//! "住房和城乡建设局") and prefixed with their district, resolved from what the reply writes:
//! a district of the directory ("A3区住建局"), "市" (the city of the complaint's district), "区"/"县"
//! (the complaint's district) or nothing (a street or town: the complaint's district; a bureau:
//! the district the reply gives it elsewhere). "我镇"/"我街道" is the one town or street the reply
//! names; "我局" only the bureau the reply thanks the citizen for supporting ("感谢您对我县住房保障局
//! 工作的支持"), since bureaus often name their superiors and peers. Offices that relay cases
//! (publicity, petitions, the hotline's hub) are never handlers. A unit the directory knows (by
//! name or alias) keeps the directory's id; any other gets its canonical name as id, so a city
//! with no past replies still routes by its directory and one with replies gets labels.
//!
//! Measured by hand (`docs/unit-extractor-check.md`): 0.95 of handler units right on a fresh
//! random 100 labelled replies, 20 % of the shared data's replies labelled.

use crate::units::{District, UnitDirectory};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// What sort of unit a name is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// A government department: 局, 委员会, 大队.
    Bureau,
    /// A street office (街道办事处).
    Street,
    /// A town or township government (镇, 乡).
    Town,
    /// A village or residents' committee (村委会, 社区居委会).
    Village,
    Company,
    School,
    Hospital,
    /// A center or office (中心, 办公室, 管委会).
    Center,
    /// The people's government of a district or city (区人民政府).
    DistrictGovernment,
    #[default]
    Other,
}

/// What the reply says the unit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitRole {
    /// Investigated, acted on or answered the case: the gold unit.
    Handler,
    /// The case was passed to it (交由/转交 X 办理) by a unit that handled it.
    Referred,
    /// Named for another reason (background, advice to contact it, an unresolved district).
    Mentioned,
}

impl UnitRole {
    fn rank(self) -> u8 {
        match self {
            UnitRole::Handler => 2,
            UnitRole::Referred => 1,
            UnitRole::Mentioned => 0,
        }
    }
}

/// One unit a reply names, with why it was given its role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractedUnit {
    /// The directory's id when the directory knows the unit, else `name`.
    pub id: String,
    /// Canonical full name with its district, e.g. "A3区住房和城乡建设局", "A3区洋湖街道".
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    pub kind: UnitKind,
    /// The span of the reply the role was decided on, and the rule when it is not obvious.
    pub evidence: String,
    pub role: UnitRole,
}

const BUILTIN: &str = include_str!("../../data/unit_aliases.toml");

#[derive(Deserialize)]
struct AliasFile {
    #[serde(default, rename = "unit")]
    units: Vec<AliasEntry>,
    #[serde(default, rename = "place")]
    places: Vec<PlaceEntry>,
    #[serde(default, rename = "suffix")]
    suffixes: Vec<SuffixEntry>,
}

#[derive(Deserialize)]
struct AliasEntry {
    name: String,
    kind: UnitKind,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Deserialize)]
struct PlaceEntry {
    forms: Vec<String>,
    canonical: String,
    kind: UnitKind,
}

#[derive(Deserialize)]
struct SuffixEntry {
    text: String,
    kind: UnitKind,
}

#[derive(Debug, Clone)]
struct Form {
    chars: Vec<char>,
    canonical: String,
    kind: UnitKind,
}

/// Full names and short forms of government units (data: `data/unit_aliases.toml`).
#[derive(Debug, Clone)]
pub struct UnitAliases {
    /// Unit names and aliases, longest first.
    names: Vec<Form>,
    name_starts: FirstChars,
    /// Place-unit endings ("街道办事处" → "街道"), longest first.
    places: Vec<Form>,
    /// Endings of names the table lacks, longest first.
    suffixes: Vec<Form>,
    by_name: HashMap<String, (String, UnitKind)>,
}

impl UnitAliases {
    /// The table shipped in `data/unit_aliases.toml`.
    pub fn builtin() -> Self {
        Self::from_toml(BUILTIN).expect("the shipped data/unit_aliases.toml parses (tested)")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let raw = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&raw).map_err(|e| match e {
            Error::InvalidInput(m) => Error::InvalidInput(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn from_toml(raw: &str) -> Result<Self> {
        let file: AliasFile =
            toml::from_str(raw).map_err(|e| Error::InvalidInput(format!("unit aliases: {e}")))?;
        let mut names = Vec::new();
        let mut by_name = HashMap::new();
        for unit in &file.units {
            for name in std::iter::once(&unit.name).chain(&unit.aliases) {
                if name.is_empty() {
                    continue;
                }
                names.push(Form {
                    chars: name.chars().collect(),
                    canonical: unit.name.clone(),
                    kind: unit.kind,
                });
                by_name
                    .entry(name.clone())
                    .or_insert((unit.name.clone(), unit.kind));
            }
        }
        let places = file
            .places
            .iter()
            .flat_map(|p| {
                p.forms.iter().map(|f| Form {
                    chars: f.chars().collect(),
                    canonical: p.canonical.clone(),
                    kind: p.kind,
                })
            })
            .collect();
        let suffixes = file
            .suffixes
            .iter()
            .map(|s| Form {
                chars: s.text.chars().collect(),
                canonical: s.text.clone(),
                kind: s.kind,
            })
            .collect();
        let longest_first = |mut v: Vec<Form>| {
            v.retain(|f| !f.chars.is_empty());
            v.sort_by_key(|f| std::cmp::Reverse(f.chars.len()));
            v
        };
        let names = longest_first(names);
        Ok(Self {
            name_starts: FirstChars::new(names.iter().map(|f| f.chars.as_slice())),
            names,
            places: longest_first(places),
            suffixes: longest_first(suffixes),
            by_name,
        })
    }

    /// The canonical name and kind of a unit name without its district ("住建局" →
    /// "住房和城乡建设局"), when the table has it.
    pub fn canonical(&self, name: &str) -> Option<(&str, UnitKind)> {
        self.by_name.get(name).map(|(c, k)| (c.as_str(), *k))
    }

    /// The kind of a unit name without its district: a name of the table, else the kind of its
    /// place ending ("洋湖街道") or unit ending ("松雅湖管理局"), else `Other`.
    pub fn kind_of(&self, body: &str) -> UnitKind {
        if let Some((_, kind)) = self.canonical(body) {
            return kind;
        }
        if let Some((_, _, kind)) = self.place_core(body) {
            return kind;
        }
        let chars: Vec<char> = body.chars().collect();
        let ends = |f: &&Form| chars.len() > f.chars.len() && chars.ends_with(&f.chars);
        self.names
            .iter()
            .chain(&self.suffixes)
            .filter(|f| f.kind != UnitKind::DistrictGovernment || chars.len() == f.chars.len())
            .find(ends)
            .map_or(UnitKind::Other, |f| f.kind)
    }

    /// The place a street, town or village unit is named after ("洋湖街道办事处" → ("洋湖", "街道",
    /// street)): its name less the place ending, at least two characters.
    pub fn place_core(&self, body: &str) -> Option<(String, String, UnitKind)> {
        let chars: Vec<char> = body.chars().collect();
        self.places
            .iter()
            .find(|f| chars.len() >= f.chars.len() + 2 && chars.ends_with(&f.chars))
            .map(|f| {
                let core: String = chars[..chars.len() - f.chars.len()].iter().collect();
                (core, f.canonical.clone(), f.kind)
            })
    }
}

/// The units a reply names, with their roles; those with [`UnitRole::Handler`] are the gold.
/// `complaint` is the complaint's title and text: its district resolves "区住建局" and unprefixed
/// streets and towns.
pub fn extract_units(
    reply: &str,
    complaint: &str,
    directory: &UnitDirectory,
    aliases: &UnitAliases,
) -> Vec<ExtractedUnit> {
    let chars: Vec<char> = reply.chars().collect();
    let complaint_chars: Vec<char> = complaint.chars().collect();
    let districts = DistrictNames::new(directory);
    let scan = Scanner {
        chars: &chars,
        districts: &districts,
        aliases,
        complaint: &complaint_chars,
    };
    let mut mentions = scan.named_units();
    mentions.extend(scan.bare_places(&mentions));
    mentions.sort_by_key(|m| m.start);
    let self_refs = scan.self_references();

    let home = Home::new(directory, complaint, reply);
    let mut resolved: Vec<Resolved> = mentions
        .iter()
        .map(|m| resolve(m, &home, &chars, &complaint_chars, &districts))
        .collect();
    resolve_bare_bureaus(&mentions, &mut resolved);

    let signature = signature_groups(&chars, &mentions);
    let roles = decide_roles(&chars, &mentions, &signature);
    let mut out: Vec<ExtractedUnit> = Vec::new();
    let mut thanked: Vec<String> = Vec::new();
    for ((m, r), (role, evidence)) in mentions.iter().zip(&resolved).zip(roles) {
        let thanked_here = r.district.is_some() && thanks(&chars, m);
        if let (Some(d), true) = (&r.district, thanked_here) {
            thanked.push(format!("{d}{}", m.body));
        }
        // "感谢您对牛角冲社区工作的关心与支持": the reply thanks on its own behalf, so it names itself.
        let (role, evidence) = match role {
            UnitRole::Mentioned if thanked_here => (
                UnitRole::Handler,
                format!(
                    "{} (thanks on its own behalf)",
                    context(&chars, m.start, m.end, 4, 6)
                ),
            ),
            _ => (role, evidence),
        };
        let relay = RELAYS
            .iter()
            .any(|w| m.body.contains(w) || m.surface_body.contains(w));
        // A county's or urban district's own relay office handled or signed it: the case stayed in
        // that district, whose government is the handler when nothing more specific is named.
        let relayed_within = match (&r.district, role) {
            (Some(d), UnitRole::Handler | UnitRole::Referred)
                if relay && has_parent(directory, d) =>
            {
                Some((d.clone(), evidence.clone()))
            }
            _ => None,
        };
        let (role, evidence) = match role {
            UnitRole::Handler | UnitRole::Referred if relay => (
                UnitRole::Mentioned,
                format!("{evidence} (an office that relays cases)"),
            ),
            _ => (role, evidence),
        };
        // A government "attaching importance" (县委、县政府高度重视) is no unit a case is routed to;
        // a case passed to a county or urban district ("已转B2区有关部门调查") went to its
        // government, the handler when the reply names nothing more specific.
        let forwarded_to_district = role == UnitRole::Referred
            && r.district
                .as_deref()
                .is_some_and(|d| has_parent(directory, d));
        let (role, evidence) = match (m.kind, role) {
            (UnitKind::DistrictGovernment, UnitRole::Referred) if forwarded_to_district => {
                (role, evidence)
            }
            (UnitKind::DistrictGovernment, UnitRole::Handler | UnitRole::Referred) => (
                UnitRole::Mentioned,
                format!("{evidence} (a government, not a handling unit)"),
            ),
            _ => (role, evidence),
        };
        let (role, evidence) = match (&r.district, role) {
            (None, UnitRole::Handler | UnitRole::Referred) => (
                UnitRole::Mentioned,
                format!("{evidence} (its district is not named, so no gold)"),
            ),
            _ => (role, evidence),
        };
        push_unit(&mut out, directory, aliases, m, r, role, evidence);
        if let Some((district, evidence)) = relayed_within {
            let government = Mention {
                body: "人民政府".into(),
                surface_body: "人民政府".into(),
                kind: UnitKind::DistrictGovernment,
                ..m.clone()
            };
            let resolved = Resolved {
                district: Some(district.clone()),
            };
            let evidence = format!("{evidence} (relayed within {district})");
            push_unit(
                &mut out,
                directory,
                aliases,
                &government,
                &resolved,
                UnitRole::Referred,
                evidence,
            );
        }
    }

    // "我局": the one unit with that ending the reply names elsewhere (not one it passed the case to).
    // A town or street writes of other towns rarely, so the one named is itself; a bureau often
    // names others of its kind (its superior "市交通局", a peer, an address), so "我局" is only
    // the 局 the reply thanks the citizen for supporting ("感谢您对X工作的支持"): a signature
    // already makes its unit a handler.
    for sr in &self_refs {
        let candidates: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, u)| u.role != UnitRole::Referred)
            .filter(|(_, u)| sr.matches(&u.name, u.kind))
            .filter(|(_, u)| {
                matches!(u.kind, UnitKind::Street | UnitKind::Town) || thanked.contains(&u.name)
            })
            .map(|(i, _)| i)
            .collect();
        let span = context(&chars, sr.start, sr.end, 2, 8);
        // One such unit named, and its district known: a second one, even without a district
        // ("安沙镇人民政府" signing beside "A9市大围山镇"), makes "我镇" ambiguous.
        if let [only] = candidates[..] {
            let unit = &mut out[only];
            if unit.role != UnitRole::Handler && unit.district.is_some() {
                unit.evidence = format!("{span} (我{} = {})", sr.suffix, unit.evidence);
                unit.role = UnitRole::Handler;
            }
        }
    }

    // 交由X办理: X is the handler only when the reply names no other.
    // A district's government only when nothing more specific was named at all.
    for governments in [false, true] {
        if out.iter().any(|u| u.role == UnitRole::Handler) {
            break;
        }
        for unit in out.iter_mut().filter(|u| {
            u.role == UnitRole::Referred && (u.kind == UnitKind::DistrictGovernment) == governments
        }) {
            unit.role = UnitRole::Handler;
            unit.evidence = format!("{} (referred; no other handler named)", unit.evidence);
        }
    }
    out
}

/// Whether the directory gives this district a parent (a county or urban district of a city).
fn has_parent(directory: &UnitDirectory, district: &str) -> bool {
    directory
        .districts
        .iter()
        .any(|d| d.name == district && d.parent.is_some())
}

/// "感谢您对X工作的关心/支持": the reply thanks the citizen on behalf of X.
fn thanks(chars: &[char], m: &Mention) -> bool {
    let before = text(chars, m.start.saturating_sub(8), m.start);
    let after = text(chars, m.end, (m.end + 4).min(chars.len()));
    // "感谢您对我县住房保障局工作…": the mention may start at its "县".
    let before = ["我县", "我市", "我区", "我"]
        .iter()
        .find_map(|w| before.strip_suffix(w))
        .unwrap_or(&before);
    ["感谢您对", "感谢你对", "谢谢您对", "谢谢你对", "感谢对"]
        .iter()
        .any(|w| before.ends_with(w))
        && (after.starts_with("工作") || after.starts_with('的'))
}

/// The handlers among the units: the gold labels.
/// The people's government of `district` as replies name it: (its id, its name), the id the
/// directory's when it lists it.
pub fn district_government(
    district: &str,
    directory: &UnitDirectory,
    aliases: &UnitAliases,
) -> (String, String) {
    const BODY: &str = "人民政府";
    let name = format!("{district}{BODY}");
    let id =
        directory_id(directory, aliases, district, &name, BODY).unwrap_or_else(|| name.clone());
    (id, name)
}

pub fn handlers(units: &[ExtractedUnit]) -> impl Iterator<Item = &ExtractedUnit> {
    units.iter().filter(|u| u.role == UnitRole::Handler)
}

fn push_unit(
    out: &mut Vec<ExtractedUnit>,
    directory: &UnitDirectory,
    aliases: &UnitAliases,
    m: &Mention,
    r: &Resolved,
    role: UnitRole,
    evidence: String,
) {
    let name = match &r.district {
        Some(d) => format!("{d}{}", m.body),
        None => m.body.clone(),
    };
    if let Some(existing) = out.iter_mut().find(|u| u.name == name) {
        if role.rank() > existing.role.rank() {
            existing.role = role;
            existing.evidence = evidence;
        }
        return;
    }
    let id = r
        .district
        .as_deref()
        .and_then(|d| directory_id(directory, aliases, d, &name, &m.surface_body))
        .unwrap_or_else(|| name.clone());
    out.push(ExtractedUnit {
        id,
        name,
        district: r.district.clone(),
        kind: m.kind,
        evidence,
        role,
    });
}

/// The directory unit with this canonical name, or whose name or alias is this unit's.
fn directory_id(
    directory: &UnitDirectory,
    aliases: &UnitAliases,
    district: &str,
    name: &str,
    surface_body: &str,
) -> Option<String> {
    if let Some(u) = directory.units.iter().find(|u| u.name == name) {
        return Some(u.id.clone());
    }
    let surface = format!("{district}{surface_body}");
    let canonical_of = |alias: &str| -> Option<String> {
        let body = alias.strip_prefix(district)?;
        aliases
            .canonical(body)
            .map(|(c, _)| format!("{district}{c}"))
    };
    directory
        .units
        .iter()
        .filter(|u| u.districts.is_empty() || u.districts.iter().any(|d| d == district))
        .find(|u| {
            std::iter::once(&u.name)
                .chain(&u.aliases)
                .any(|a| a == name || *a == surface || canonical_of(a).as_deref() == Some(name))
        })
        .map(|u| u.id.clone())
}

// ---------------------------------------------------------------------------------------------
// Finding unit names

/// How a name's district is written.
#[derive(Debug, Clone, PartialEq)]
enum Prefix {
    /// A district of the directory: "A3区住建局".
    District(String),
    /// "市住建局": the city of the complaint's district.
    City,
    /// "区住建局", "县教育局": the complaint's district, when it is a 区 or 县 respectively.
    Local(char),
    /// No district written.
    Bare,
}

#[derive(Debug, Clone)]
struct Mention {
    start: usize,
    end: usize,
    prefix: Prefix,
    /// Canonical name without the district ("住房和城乡建设局", "洋湖街道").
    body: String,
    /// The name as written, without the district ("住建局").
    surface_body: String,
    kind: UnitKind,
}

struct DistrictNames<'a> {
    /// (name as written, district), longest first.
    names: Vec<(Vec<char>, &'a District)>,
    starts: FirstChars,
}

impl<'a> DistrictNames<'a> {
    fn new(directory: &'a UnitDirectory) -> Self {
        let mut names: Vec<(Vec<char>, &District)> = directory
            .districts
            .iter()
            .flat_map(|d| {
                std::iter::once(&d.name)
                    .chain(&d.aliases)
                    .filter(|n| !n.is_empty())
                    .map(move |n| (n.chars().collect(), d))
            })
            .collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.0.len()));
        let starts = FirstChars::new(names.iter().map(|n| n.0.as_slice()));
        Self { names, starts }
    }

    /// The district whose name starts at `i`, and where it ends.
    fn at(&self, chars: &[char], i: usize) -> Option<(usize, &'a District)> {
        self.starts
            .first_match(chars, i, |k| &self.names[k].0)
            .map(|k| (i + self.names[k].0.len(), self.names[k].1))
    }
}

/// The positions in a longest-first list of names, by their first character. A scan tries at
/// each character only the names that start with it, in the list's order, so it finds the same
/// (longest) name as trying the whole list, without comparing every name at every character.
#[derive(Debug, Clone, Default)]
struct FirstChars(HashMap<char, Vec<usize>>);

impl FirstChars {
    fn new<'a>(names: impl Iterator<Item = &'a [char]>) -> Self {
        let mut by_first: HashMap<char, Vec<usize>> = HashMap::new();
        for (k, name) in names.enumerate() {
            if let Some(&c) = name.first() {
                by_first.entry(c).or_default().push(k);
            }
        }
        Self(by_first)
    }

    /// The first name (by its position) of the list that starts at `chars[i]`.
    fn first_match<'n>(
        &self,
        chars: &[char],
        i: usize,
        name: impl Fn(usize) -> &'n [char],
    ) -> Option<usize> {
        let candidates = self.0.get(chars.get(i)?)?;
        candidates
            .iter()
            .copied()
            .find(|&k| starts_with(chars, i, name(k)))
    }
}

fn starts_with(chars: &[char], i: usize, pattern: &[char]) -> bool {
    chars.len() >= i + pattern.len() && chars[i..i + pattern.len()] == *pattern
}

fn starts_with_str(chars: &[char], i: usize, pattern: &str) -> bool {
    (i..)
        .zip(pattern.chars())
        .all(|(j, c)| chars.get(j) == Some(&c))
}

fn ends_with_str(chars: &[char], end: usize, pattern: &str) -> bool {
    let n = pattern.chars().count();
    end >= n && starts_with_str(chars, end - n, pattern)
}

fn is_han(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

fn text(chars: &[char], start: usize, end: usize) -> String {
    chars[start.min(chars.len())..end.min(chars.len())]
        .iter()
        .collect()
}

/// Characters that end a clause for the role patterns.
fn is_clause_break(c: char) -> bool {
    matches!(
        c,
        '，' | '。' | '；' | '：' | '！' | '？' | ',' | ';' | ':' | '!' | '?' | '\n' | '\r'
    ) || c.is_whitespace()
}

/// Characters that never occur inside a unit's own name (function words, verbs of the phrases
/// around it), so a name read backwards from its ending stops there.
const NOT_IN_NAME: &str = "年日号次的了已将在对于并和与及、等是为把被也就都要会由经向从按其该此各我你您他她它们这那有无不没再还又所以因但而或即给让至到请称据后前时个些";

/// Function words that may precede a street or town name inside one run of Han characters
/// ("经黎托街道", "辖区桂花坪街道"), longest first; stripped from its left.
const LEADING_WORDS: &[&str] = &[
    "转交至",
    "转交给",
    "所在地",
    "交由",
    "转交",
    "转至",
    "转给",
    "转到",
    "移交",
    "交给",
    "经过",
    "会同",
    "联合",
    "以及",
    "辖区",
    "属地",
    "所在",
    "当地",
    "位于",
    "属于",
    "要求",
    "督促",
    "责成",
    "协调",
    "组织",
    "通知",
    "指导",
    "配合",
    "根据",
    "按照",
    "针对",
    "已经",
    "随即",
    "立即",
    "及时",
    "并由",
    "经",
    "由",
    "及",
    "和",
    "与",
    "同",
    "请",
    "交",
    "转",
    "将",
    "对",
    "在",
    "向",
    "是",
    "为",
    "并",
    "已",
    "现",
    "于",
    "至",
    "到",
    "给",
    "让",
    "被",
    "据",
    "归",
    "从",
    "即",
    "后",
    "故",
    "跟",
    "通过",
    "原",
    "上报",
    "报",
    "致电",
    "联系",
    "咨询",
    "拨打",
    "前往",
];

/// Characters of administrative levels, never inside a street's or town's own name ("我镇组织镇政府").
const NOT_IN_PLACE: &str = "镇乡区县市省村街";

/// Last characters of a name that make "X镇"/"X乡"/"X街道" a common noun ("城镇", "乡镇", "各街道").
const NOT_NAME_END: &str = "城乡集村街小全各该本我市区县省大主要条个些每两旧古重老新这那";

struct Scanner<'a> {
    chars: &'a [char],
    districts: &'a DistrictNames<'a>,
    aliases: &'a UnitAliases,
    complaint: &'a [char],
}

impl Scanner<'_> {
    /// Units written with a known name, or with a district's name and a unit ending.
    fn named_units(&self) -> Vec<Mention> {
        let chars = self.chars;
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            // A chain of districts ("A市A3区"): the last one is the unit's.
            if let Some((mut j, mut district)) = self.districts.at(chars, i) {
                while let Some((k, d)) = self.districts.at(chars, j) {
                    (j, district) = (k, d);
                }
                let body = self.body_after_district(j);
                // "J市公安局J1区分局": the district's branch of the bureau just named.
                let previous = out.last().filter(|m: &&Mention| {
                    m.end == i && m.kind == UnitKind::Bureau && starts_with_str(chars, j, "分局")
                });
                if let Some(bureau) = previous {
                    let end = j + 2;
                    let merged = Mention {
                        start: bureau.start,
                        end,
                        prefix: Prefix::District(district.name.clone()),
                        body: bureau.body.clone(),
                        surface_body: format!("{}{}", bureau.surface_body, text(chars, i, end)),
                        kind: UnitKind::Bureau,
                    };
                    *out.last_mut().expect("just matched") = merged;
                    i = end;
                    continue;
                }
                if let Some((end, body, surface_body, kind)) =
                    body.or_else(|| self.forward_to_district(i, j, district))
                {
                    out.push(Mention {
                        start: i,
                        end,
                        prefix: Prefix::District(district.name.clone()),
                        body,
                        surface_body,
                        kind,
                    });
                    i = end;
                } else {
                    i = j;
                }
                continue;
            }
            let bare = self.known_name(i);
            let prefixed = match chars[i] {
                c @ ('市' | '区' | '县') if self.prefix_char_ok(i) => self
                    .known_name(i + 1)
                    .or_else(|| self.place_after(i + 1, 2))
                    // "已转市商粮局调查", "已转县电力公司核查": a unit the alias table lacks,
                    // written with its level and a unit ending.
                    .or_else(|| self.generic_after(i + 1))
                    .map(|b| (c, b)),
                _ => None,
            };
            let pick = match (bare, prefixed) {
                (Some(b), Some((c, p))) if p.0 > b.0 => Some((Some(c), p)),
                (Some(b), _) => Some((None, b)),
                (None, Some((c, p))) => Some((Some(c), p)),
                (None, None) => None,
            };
            // A government is a unit only with its district ("A3区政府", "区人民政府").
            let pick = pick.filter(|(p, b)| p.is_some() || b.3 != UnitKind::DistrictGovernment);
            if let Some((prefix_char, (end, body, surface_body, kind))) = pick {
                let prefix = match prefix_char {
                    Some('市') => Prefix::City,
                    Some(c) => Prefix::Local(c),
                    None => Prefix::Bare,
                };
                out.push(Mention {
                    start: i,
                    end,
                    prefix,
                    body,
                    surface_body,
                    kind,
                });
                i = end;
                continue;
            }
            i += 1;
        }
        out
    }

    /// The unit name right after a district's name ending at `j`. The anonymisation of the shared
    /// data doubles level characters ("L10县县住建局", "A8县市公安局"): a level character right
    /// after the district is skipped unless a known name starts with it ("A8县市场监督管理局").
    fn body_after_district(&self, j: usize) -> Option<(usize, String, String, UnitKind)> {
        let read = |j: usize| {
            self.known_name(j)
                .or_else(|| self.place_after(j, 1))
                .or_else(|| self.generic_after(j))
        };
        // "区长", "县委", "市民" are words of their own.
        let word = self
            .chars
            .get(j + 1)
            .is_some_and(|&c| "长委民直".contains(c));
        if self.chars.get(j).is_some_and(|&c| "县区市".contains(c))
            && self.known_name(j).is_none()
            && !word
        {
            if let Some(body) = read(j + 1) {
                return Some(body);
            }
        }
        read(j)
    }

    /// "已转B2区有关部门调查核处", "已转F9市调查处理", "交办给B6县政府进行处理": a case passed to a
    /// district (with a parent: a county or urban district, not a whole city) and nothing more
    /// specific is that district's government, `i..j` being the district's name. The role is decided
    /// later, like any referral's ("交由X办理").
    fn forward_to_district(
        &self,
        i: usize,
        j: usize,
        district: &District,
    ) -> Option<(usize, String, String, UnitKind)> {
        district.parent.as_ref()?;
        let before = text(self.chars, i.saturating_sub(4), i);
        if !REFER.iter().any(|v| before.ends_with(v)) {
            return None;
        }
        let mut end = j;
        if self.chars.get(end).is_some_and(|&c| "县区市".contains(c)) {
            end += 1; // the doubled level character
        }
        for part in [
            &["人民政府", "政府"][..],
            &[
                "及有关部门",
                "及相关部门",
                "有关部门",
                "相关部门",
                "有关单位",
                "相关单位",
            ][..],
        ] {
            if let Some(w) = part.iter().find(|w| starts_with_str(self.chars, end, w)) {
                end += w.chars().count();
            }
        }
        let rest = text(self.chars, end, (end + 6).min(self.chars.len()));
        let rest = rest
            .trim_start_matches("进行")
            .trim_start_matches("予以")
            .trim_start_matches('并');
        let passed = rest.is_empty()
            || rest.starts_with(is_clause_break)
            || REFERRED_FOR.iter().any(|v| rest.starts_with(v))
            || ["答复", "反馈"].iter().any(|v| rest.starts_with(v));
        passed.then(|| {
            (
                end,
                "人民政府".to_string(),
                text(self.chars, j, end),
                UnitKind::DistrictGovernment,
            )
        })
    }

    /// "市"/"区"/"县" at `i` is a district prefix, not the end of a word ("全市", "城区", "辖区").
    fn prefix_char_ok(&self, i: usize) -> bool {
        match i.checked_sub(1).map(|p| self.chars[p]) {
            None => true,
            Some(p) => {
                !is_han(p)
                    || !"全各城该本两省州地都郊辖社小新老街市区县园片景山矿校开发".contains(p)
            }
        }
    }

    /// A name of the alias table starting at `i`: (end, canonical, as written, kind).
    fn known_name(&self, i: usize) -> Option<(usize, String, String, UnitKind)> {
        let names = &self.aliases.names;
        let k = self
            .aliases
            .name_starts
            .first_match(self.chars, i, |k| &names[k].chars)?;
        let form = &names[k];
        let end = i + form.chars.len();
        // A bare "政府" is dropped by `named_units` unless a district precedes it.
        Some((
            end,
            form.canonical.clone(),
            text(self.chars, i, end),
            form.kind,
        ))
    }

    /// "洋湖街道(办事处)" right after a district: a name of at least `min` characters and a place
    /// ending.
    fn place_after(&self, j: usize, min: usize) -> Option<(usize, String, String, UnitKind)> {
        for len in min..=5 {
            let name = self.chars.get(j..j + len)?;
            if name.iter().any(|&c| !is_han(c) || NOT_IN_NAME.contains(c)) {
                return None;
            }
            if let Some(form) = self
                .aliases
                .places
                .iter()
                .find(|f| starts_with(self.chars, j + len, &f.chars))
            {
                if NOT_NAME_END.contains(name[len - 1])
                    || name.iter().any(|&c| NOT_IN_PLACE.contains(c))
                {
                    return None;
                }
                let name: String = name.iter().collect();
                let end = j + len + form.chars.len();
                return Some((
                    end,
                    format!("{name}{}", form.canonical),
                    text(self.chars, j, end),
                    form.kind,
                ));
            }
        }
        None
    }

    /// "A7县松雅湖管理局": after a district, up to ten name characters and a unit ending.
    fn generic_after(&self, j: usize) -> Option<(usize, String, String, UnitKind)> {
        for end in j + 1..=(j + 12).min(self.chars.len()) {
            let c = self.chars[end - 1];
            if !is_han(c) {
                return None;
            }
            let ends_here = |s: &&Form| {
                end >= j + s.chars.len() && self.chars[end - s.chars.len()..end] == s.chars[..]
            };
            // "办" in "办公室", "中心" in "中心校": a longer ending goes on.
            let goes_on = |s: &Form| {
                self.aliases.suffixes.iter().any(|l| {
                    l.chars.len() > s.chars.len()
                        && starts_with(self.chars, end - s.chars.len(), &l.chars)
                }) || self
                    .chars
                    .get(end)
                    .is_some_and(|&c| "公校长法学".contains(c))
            };
            if let Some(suffix) = self.aliases.suffixes.iter().find(ends_here) {
                if goes_on(suffix) {
                    continue;
                }
                let body = &self.chars[j..end - suffix.chars.len()];
                // "A1区街道办": a street office is a place, read by `place_after` or not at all.
                let place_like = self
                    .aliases
                    .places
                    .iter()
                    .any(|f| starts_with(body, 0, &f.chars));
                // "交通运输和旅游局": "和" joins the parts of a bureau's name when both have two
                // characters or more and no unit ending closes the first ("教育和莲花学校"
                // names two).
                let joins =
                    |k: usize| suffix.kind == UnitKind::Bureau && k >= 2 && body.len() - k > 2;
                let not_in_name =
                    |(k, &c): (usize, &char)| NOT_IN_NAME.contains(c) && !(c == '和' && joins(k));
                if body.len() < 2 || place_like || body.iter().enumerate().any(not_in_name) {
                    return None;
                }
                let name = text(self.chars, j, end);
                return Some((end, name.clone(), name, suffix.kind));
            }
        }
        None
    }

    /// Streets and towns written without a district ("经黎托街道核实"), not inside `named`.
    /// The name is read backwards from the ending: the longest 2 to 4 characters the complaint
    /// names too, or else the run of name characters less leading function words ("辖区").
    /// A bare "X镇"/"X乡" needs the complaint to name X, since "家乡", "城镇" and the like are
    /// common words.
    fn bare_places(&self, named: &[Mention]) -> Vec<Mention> {
        let chars = self.chars;
        let covered = |i: usize| named.iter().any(|m| m.start <= i && i < m.end);
        let mut out = Vec::new();
        let mut i = 1;
        while i < chars.len() {
            let Some(form) = self
                .aliases
                .places
                .iter()
                .filter(|f| matches!(f.kind, UnitKind::Street | UnitKind::Town))
                .find(|f| starts_with(chars, i, &f.chars))
            else {
                i += 1;
                continue;
            };
            let end = i + form.chars.len();
            if covered(i) || covered(i - 1) {
                i = end;
                continue;
            }
            let mut start = i;
            while start > 0
                && i - start < 8
                && is_han(chars[start - 1])
                && !covered(start - 1)
                // "7月桃川镇": a month is no part of the name.
                && !(chars[start - 1] == '月' && start >= 2 && chars[start - 2].is_ascii_digit())
            {
                start -= 1;
            }
            let run = after_last_word(&chars[start..i]);
            let single = form.chars.len() == 1;
            // The longest tail the complaint writes as a name of its own ("问题高桥" → "高桥"),
            // else the whole run; a bare "X镇"/"X乡" must be named by the complaint too.
            let name = (2..=4.min(run.len()))
                .rev()
                .map(|len| &run[run.len() - len..])
                .find(|n| named_alone(self.complaint, n))
                .or_else(|| {
                    let ok = (2..=4).contains(&run.len())
                        && (!single || contains(self.complaint, &run.iter().collect::<String>()));
                    ok.then_some(run)
                });
            let plausible = |n: &&[char]| {
                !NOT_NAME_END.contains(n[n.len() - 1])
                    && !n
                        .iter()
                        .any(|&c| NOT_IN_PLACE.contains(c) || NOT_IN_NAME.contains(c))
                    && !LEADING_WORDS
                        .iter()
                        .any(|w| w.chars().eq(n.iter().copied()))
            };
            if let Some(name) = name.filter(plausible) {
                let name_start = i - name.len();
                let name: String = name.iter().collect();
                out.push(Mention {
                    start: name_start,
                    end,
                    prefix: Prefix::Bare,
                    body: format!("{name}{}", form.canonical),
                    surface_body: text(chars, name_start, end),
                    kind: form.kind,
                });
            }
            i = end;
        }
        out
    }

    /// "我局", "我街道", "本镇": the reply's own unit, by its ending.
    fn self_references(&self) -> Vec<SelfRef> {
        let chars = self.chars;
        let mut out = Vec::new();
        for i in 0..chars.len() {
            if chars[i] != '我' && chars[i] != '本' {
                continue;
            }
            if let Some(suffix) = SELF_SUFFIXES
                .iter()
                .find(|s| starts_with_str(chars, i + 1, s))
            {
                let end = i + 1 + suffix.chars().count();
                // "本局" fine; "我局长", "本中心区" are not self references.
                if chars.get(end).is_some_and(|&c| "长区城".contains(c)) {
                    continue;
                }
                out.push(SelfRef {
                    start: i,
                    end,
                    suffix,
                });
            }
        }
        out
    }
}

/// What follows the last function word or character of the run ("我们立即要求玉潭" → "玉潭",
/// "辖区桂花坪" → "桂花坪"), keeping at least two characters: a name does not include them.
fn after_last_word(run: &[char]) -> &[char] {
    let (mut k, mut cut) = (0, 0);
    while k < run.len() {
        if let Some(w) = LEADING_WORDS
            .iter()
            .filter(|w| starts_with_str(run, k, w))
            .max_by_key(|w| w.chars().count())
        {
            k += w.chars().count();
            // Keep two characters: "经同升" is 同升, not 升.
            if run.len() >= k + 2 {
                cut = k;
            }
        } else {
            if NOT_IN_NAME.contains(run[k]) && run.len() >= k + 3 {
                cut = k + 1;
            }
            k += 1;
        }
    }
    &run[cut..]
}

/// Whether `text` writes `name` with a clean start: after a non-Han character, a function
/// word or a district's level ("A2区桂花坪").
fn named_alone(text: &[char], name: &[char]) -> bool {
    (0..text.len().saturating_sub(name.len() - 1)).any(|k| {
        text[k..].starts_with(name)
            && (k == 0 || {
                let before = text[k - 1];
                !is_han(before) || NOT_IN_NAME.contains(before) || "区县市省".contains(before)
            })
    })
}

fn contains(haystack: &[char], needle: &str) -> bool {
    let n: Vec<char> = needle.chars().collect();
    !n.is_empty() && haystack.windows(n.len()).any(|w| w == n.as_slice())
}

const SELF_SUFFIXES: &[&str] = &[
    "街道", "中心", "公司", "大队", "支队", "局", "镇", "乡", "委", "办", "所", "院", "校", "站",
];

struct SelfRef {
    start: usize,
    end: usize,
    suffix: &'static str,
}

impl SelfRef {
    /// Whether a unit of this name and kind is what "我{suffix}" calls itself.
    fn matches(&self, name: &str, kind: UnitKind) -> bool {
        match self.suffix {
            "街道" => kind == UnitKind::Street,
            "镇" => kind == UnitKind::Town && name.ends_with('镇'),
            "乡" => kind == UnitKind::Town && name.ends_with('乡'),
            "委" => name.ends_with("委员会") || name.ends_with('委'),
            "办" => name.ends_with('办') || name.ends_with("办公室"),
            "校" => kind == UnitKind::School,
            s => name.ends_with(s),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Districts

/// The complaint's district, to resolve "市"/"区"/"县" and unprefixed streets.
struct Home<'a> {
    directory: &'a UnitDirectory,
    district: Option<&'a District>,
    /// The district is a county-level city, where "市" is ambiguous.
    county_city: bool,
}

impl<'a> Home<'a> {
    fn new(directory: &'a UnitDirectory, complaint: &str, reply: &str) -> Self {
        // The title names the complaint's place most reliably; the text may name others too
        // (where the writer invested, a company's seat), so it only narrows the title's city.
        let (title, body) = complaint.split_once('\n').unwrap_or((complaint, ""));
        let is_leaf = |d: &&District| d.parent.is_some();
        fn within<'d>(outer: Option<&'d District>) -> impl Fn(&&District) -> bool + 'd {
            move |d| outer.is_none_or(|o| d.parent.as_deref() == Some(o.name.as_str()))
        }
        let from_title = directory.extract_district(title);
        let from_complaint = match from_title {
            Some(d) if d.parent.is_some() => Some(d),
            _ => directory
                .extract_district(body)
                .filter(is_leaf)
                .filter(within(from_title))
                .or(from_title),
        };
        // A reply naming a district of that city (or any, when the complaint names none) narrows it.
        let district = match from_complaint {
            Some(d) if d.parent.is_some() => Some(d),
            other => directory
                .extract_district(reply)
                .filter(is_leaf)
                .filter(within(other))
                .or(other),
        };
        // A complaint naming a city the district is not in ("L市A3区", A3区 being A市's) does
        // not say which it is about.
        let other_city = |d: &District| {
            directory.districts.iter().any(|c| {
                c.parent.is_none()
                    && d.parent.as_deref() != Some(c.name.as_str())
                    && d.name != c.name
                    && contains(&title.chars().collect::<Vec<_>>(), &c.name)
            })
        };
        let district = district.filter(|d| d.parent.is_none() || !other_city(d));
        // "A8县市": a county that became a city, where "市住建局" is its own bureau, not the city's.
        let county_city = district.is_some_and(|d| {
            let as_city = format!("{}市", d.name);
            d.parent.is_some()
                && (d.name.ends_with('市')
                    || complaint.contains(&as_city)
                    || reply.contains(&as_city))
        });
        Self {
            directory,
            district,
            county_city,
        }
    }

    /// The district a "市" prefix means: the city of the complaint's district, or the complaint's
    /// city itself. None for a county-level city ("A9市" under "A市"), where "市" is ambiguous.
    fn city(&self) -> Option<String> {
        let d = self.district?;
        match &d.parent {
            None => Some(d.name.clone()),
            Some(_) if self.county_city => None,
            Some(p) => self
                .directory
                .districts
                .iter()
                .find(|x| &x.name == p)
                .map(|x| x.name.clone()),
        }
    }

    /// The district a "区"/"县" prefix means: the complaint's, when it is of that level.
    fn local(&self, c: char) -> Option<String> {
        let d = self.district?;
        (d.parent.is_some() && d.name.ends_with(c)).then(|| d.name.clone())
    }

    /// The district of a street or town the reply names without one.
    fn leaf(&self) -> Option<String> {
        self.district
            .filter(|d| d.parent.is_some())
            .map(|d| d.name.clone())
    }
}

struct Resolved {
    district: Option<String>,
}

fn resolve(
    m: &Mention,
    home: &Home,
    chars: &[char],
    complaint: &[char],
    districts: &DistrictNames,
) -> Resolved {
    let district = match &m.prefix {
        Prefix::District(d) => Some(d.clone()),
        Prefix::City => home.city(),
        Prefix::Local(c) => home.local(*c),
        Prefix::Bare => match m.kind {
            UnitKind::Street | UnitKind::Town | UnitKind::Village => {
                let name = ["街道", "镇", "乡", "社区", "村"]
                    .iter()
                    .find_map(|s| m.body.strip_suffix(s))
                    .unwrap_or(&m.body);
                written_district(&[chars, complaint], name, districts).or_else(|| home.leaf())
            }
            _ => None,
        },
    };
    Resolved { district }
}

/// The district the reply or the complaint writes in front of this place's name elsewhere
/// ("A3区洋湖街道"), when they write only one.
fn written_district(texts: &[&[char]], name: &str, districts: &DistrictNames) -> Option<String> {
    let name: Vec<char> = name.chars().collect();
    // Where the name is written: a district written in front of it ends there (the few places
    // are found once, rather than every district's name + the name searched in the texts).
    let places: Vec<(&[char], usize)> = texts
        .iter()
        .flat_map(|&t| {
            (0..(t.len() + 1).saturating_sub(name.len()))
                .filter(|&at| starts_with(t, at, &name))
                .map(move |at| (t, at))
        })
        .collect();
    let mut found: Option<String> = None;
    // Only a county or urban district is a place's district ("A市安沙镇" writes the city).
    for (written, d) in districts.names.iter().filter(|(_, d)| d.parent.is_some()) {
        if places
            .iter()
            .any(|&(t, at)| at >= written.len() && t[at - written.len()..at] == written[..])
        {
            if found.as_ref().is_some_and(|f| f != &d.name) {
                return None;
            }
            found = Some(d.name.clone());
        }
    }
    found
}

/// An unprefixed bureau ("住建局") takes the district the reply gives the same unit elsewhere,
/// when it gives exactly one.
fn resolve_bare_bureaus(mentions: &[Mention], resolved: &mut [Resolved]) {
    for i in 0..mentions.len() {
        if resolved[i].district.is_some() || mentions[i].prefix != Prefix::Bare {
            continue;
        }
        let mut districts: Vec<String> = mentions
            .iter()
            .zip(resolved.iter())
            .filter(|(m, _)| m.body == mentions[i].body)
            .filter_map(|(_, r)| r.district.clone())
            .collect();
        districts.sort();
        districts.dedup();
        if let [only] = &districts[..] {
            resolved[i].district = Some(only.clone());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Roles

/// Verbs of investigation after "经X" ("经A5区教育局、黎托街道核实").
const INVESTIGATE: &[&str] = &[
    "调查", "核实", "核查", "了解", "查实", "查明", "查证", "现场", "实地", "走访", "勘查", "检查",
    "排查", "巡查", "复核", "查看", "调取", "摸底",
];

/// What a unit does right away on receiving a case ("A3区住建局立即…", "…收到后").
const PROMPTLY: &[&str] = &[
    "立即",
    "迅速",
    "及时",
    "第一时间",
    "随即",
    "马上",
    "当即",
    "立刻",
    "收到",
    "接到",
    "接报",
    "在收到",
    "在接到",
];

/// What the case is passed on for, after "交由X".
const REFERRED_FOR: &[&str] = &[
    "办理", "处理", "核实", "办复", "调查", "核查", "回复", "答复", "调处", "落实", "跟进", "解决",
    "查处", "依法", "研究", "核处",
];

/// Words between a unit and the verb of what it did ("A5区教育局工作人员现场核实").
const LEAD_INS: &[&str] = &[
    "积极",
    "随后",
    "当即",
    "专门",
    "也",
    "已于",
    "还",
    "工作人员",
    "执法人员",
    "相关人员",
    "相关负责人",
    "负责人",
    "领导",
    "经过",
    "经",
    "已经",
    "已",
    "立即",
    "迅速",
    "及时",
    "多次",
    "随即",
    "再次",
    "派员",
    "派人",
    "组织",
    "认真",
    "进行了",
    "进行",
    "详细",
    "深入",
    "专门",
    "第一时间",
];

/// What a unit did about the case ("区住房保障局多次约谈项目", "由火星街道牵头"), after the lead-ins
/// and a time; a plan ("将…") or an approval ("审批") is not among them.
const ACT: &[&str] = &[
    "牵头",
    "约谈",
    "责令",
    "督促",
    "组织",
    "召开",
    "派员",
    "派人",
    "派出工作",
    "派工作",
    "派专人",
    "安排",
    "处罚",
    "查处",
    "拆除",
    "清理",
    "整改",
    "整治",
    "执法",
    "立案",
    "查扣",
    "暂扣",
    "取缔",
    "关停",
    "制止",
    "劝导",
    "约见",
    "回访",
    "受理",
    "下达",
    "协调",
];

/// Verbs whose object a unit after them is ("组织…、市国土局工作人员召开了协调会").
const OBJECT_OF: &[&str] = &[
    "组织", "召集", "邀请", "要求", "协调", "督促", "责成", "安排", "通知",
];

/// A unit's staff ("A5区教育局工作人员…"): what they did on the case is the unit's doing.
const STAFF: &[&str] = &[
    "工作人员",
    "执法人员",
    "执法队员",
    "相关人员",
    "相关负责人",
    "负责人",
    "领导",
];

/// Going to the place of the complaint, after a unit's staff.
const ON_SITE: &[&str] = &[
    "上门",
    "到现场",
    "赶赴",
    "赴现场",
    "来到",
    "前往现场",
    "到达现场",
    "深入现场",
];

/// Marks of an action done, for [`ACT`].
const DONE: &[&str] = &[
    "已", "了", "立即", "当即", "随即", "迅速", "及时", "现场", "多次", "日",
];

/// Words before a unit that ask it to look into the case ("要求县卫计局对您反映的问题进行调查").
const ASK: &[&str] = &["要求", "责成", "督促", "安排", "协调", "组织"];

/// Words before a unit that tell the citizen to turn to it: no role.
const ADVICE: &[&str] = &[
    "联系",
    "咨询",
    "致电",
    "拨打",
    "向",
    "到",
    "前往",
    "与",
    "找",
    "至",
    "咨询了解",
    "反映至",
    "请您",
    "建议您",
];

/// Verbs (at the end of the text before a unit) that pass a case to it.
const REFER: &[&str] = &[
    "交办给",
    "交办至",
    "转办给",
    "转交至",
    "转交给",
    "转交到",
    "移交至",
    "移交给",
    "交由",
    "转交",
    "转至",
    "转给",
    "转到",
    "转办",
    "移交",
    "交给",
    "交办",
    "转请",
    "转送",
    "批转",
    "责成",
    "交",
    "转",
];

/// Names of offices that relay cases (a party or government general office, the publicity or
/// internet office, the hotline, the petitions office, the e-government or service hub that
/// hosts the hotline): signing a reply or receiving a forwarded case, they relay the answer, not
/// handle the case.
const RELAYS: &[&str] = &[
    "委办公室",
    "政府办公室",
    "宣传",
    "网信",
    "网宣",
    "网络",
    "热线",
    "信访",
    "督查",
    "电子政务",
    "行政审批",
    "政务服务",
];

/// Mentions joined by "、", "和", … ("A5区教育局、黎托街道"): indices into the mentions.
fn groups(chars: &[char], mentions: &[Mention]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, m) in mentions.iter().enumerate() {
        if let Some(last) = out.last_mut() {
            let prev = &mentions[*last.last().expect("groups are never empty")];
            if prev.end <= m.start {
                let gap = text(chars, prev.end, m.start);
                if matches!(
                    gap.as_str(),
                    "、" | "和" | "与" | "及" | "以及" | "会同" | "联合" | "同"
                ) {
                    last.push(i);
                    continue;
                }
            }
        }
        out.push(vec![i]);
    }
    out
}

/// The text of the clause before `start` (back to a clause break) and after `end`.
fn clause_around(chars: &[char], start: usize, end: usize) -> (String, String) {
    let mut s = start;
    while s > 0 && !is_clause_break(chars[s - 1]) && start - s < 40 {
        s -= 1;
    }
    let mut e = end;
    while e < chars.len() && !is_clause_break(chars[e]) && e - end < 40 {
        e += 1;
    }
    (text(chars, s, start), text(chars, end, e))
}

/// A few characters around a span, for evidence.
fn context(chars: &[char], start: usize, end: usize, before: usize, after: usize) -> String {
    let s = start.saturating_sub(before);
    let mut e = (end + after).min(chars.len());
    // Stop at the end of the clause.
    if let Some(k) = (end..e).find(|&k| is_clause_break(chars[k])) {
        e = k;
    }
    text(chars, s, e)
}

/// Indices of the groups that sign the reply: a unit alone on its line, followed by a date (or
/// by nothing), e.g. "…支持！ A7县交通运输局 2019年5月9日".
fn signature_groups(chars: &[char], mentions: &[Mention]) -> Vec<usize> {
    static DATE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let date = DATE.get_or_init(|| regex::Regex::new(
        r"^\s*(?:[\p{Han}]{0,8}(?:科|室|股|处|队|所|站))?\s*(?:(?:19|20)\d{2}\s*(?:年\s*\d{1,2}\s*月|[\-/.]\s*\d{1,2}\s*[\-/.])|[二〇○零][〇○零一二三四五六七八九]{3}年[一二三四五六七八九十]{1,2}月|$)",
    )
    .expect("static regex"));
    let mut out = Vec::new();
    for (i, m) in mentions.iter().enumerate() {
        let before_ok = m.start == 0
            || is_clause_break(chars[m.start - 1])
            || "！。”)）".contains(chars[m.start - 1])
            || ends_with_str(chars, m.start, "中共");
        if !before_ok {
            continue;
        }
        let after = text(chars, m.end, (m.end + 24).min(chars.len()));
        if date.is_match(&after) {
            out.push(i);
        }
    }
    out
}

/// Each mention's role and the evidence for it.
fn decide_roles(
    chars: &[char],
    mentions: &[Mention],
    signature: &[usize],
) -> Vec<(UnitRole, String)> {
    let mut roles: Vec<(UnitRole, String)> = mentions
        .iter()
        .map(|m| (UnitRole::Mentioned, context(chars, m.start, m.end, 4, 6)))
        .collect();
    for group in groups(chars, mentions) {
        let first = &mentions[group[0]];
        let last = &mentions[*group.last().expect("groups are never empty")];
        if let Some(role) = group_role(chars, first.start, last.end) {
            for &i in &group {
                roles[i] = role.clone();
            }
        }
    }
    for &i in signature {
        let m = &mentions[i];
        let span = text(chars, m.start, (m.end + 16).min(chars.len()));
        let span = span.trim_end();
        // A relaying office's signature is demoted by `extract_units`, which knows its district.
        let sign = (UnitRole::Handler, format!("{span} (signature)"));
        if roles[i].0 != UnitRole::Handler {
            roles[i] = sign;
        }
    }
    roles
}

/// The role the phrase around a group of units (`start..end`) gives them, if any.
fn group_role(chars: &[char], start: usize, end: usize) -> Option<(UnitRole, String)> {
    let (left, right) = clause_around(chars, start, end);
    let right_head: String = right.chars().take(12).collect();
    let acted = strip_words(&right, LEAD_INS);
    let span = |tag: &str| {
        let l: String = left
            .chars()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let r: String = right.chars().take(10).collect();
        let tag = if tag.is_empty() {
            String::new()
        } else {
            format!(" ({tag})")
        };
        format!("{l}{}{r}{tag}", text(chars, start, end))
    };
    let investigates = |s: &str| INVESTIGATE.iter().any(|v| s.contains(v));
    // Inside a title (《…》, “…”) a name is the title's, not an actor.
    if inside_quotes(chars, start) {
        return None;
    }
    // "我局A2区工商分局执法人员已告知…", "我们B1区教育阳光服务中心非常关注": the reply names itself
    // (as the subject: "向我局不动产登记中心提交" names where to apply, not who answers).
    let names_itself = ["我们", "我局", "我单位", "本局", "本单位"]
        .iter()
        .any(|w| {
            left.strip_suffix(w).is_some_and(|before| {
                !before.ends_with(|c: char| "向到在给对与和至经由从".contains(c))
            })
        });
    if names_itself {
        return Some((UnitRole::Handler, span("names itself")));
    }
    // "X现将调查情况回复如下", "X答复如下": the unit answers.
    if ["回复如下", "答复如下", "现回复如下", "现答复如下"]
        .iter()
        .any(|w| right.starts_with(w))
    {
        return Some((UnitRole::Handler, span("answers")));
    }
    // "X已于2019年11月21日在网上进行了公开答复", "X于…作出了书面答复": the unit answered the case.
    let dated = right.strip_prefix('已').unwrap_or(&right);
    if dated.starts_with('于')
        && ["进行了", "作出了", "作了", "给予了"]
            .iter()
            .any(|w| dated.contains(w))
        && ["答复", "回复"].iter().any(|w| dated.contains(w))
    {
        return Some((UnitRole::Handler, span("answered")));
    }
    // Passed on: "交由X办理", "要求X对…进行调查核实", "已转X。".
    // A bare "交"/"转" passes this case on only when done ("已转X", "立即转X"); otherwise it is
    // a step of a procedure ("交A6区人社局就业促进科复核后办理证件").
    let passed_on = REFER
        .iter()
        .find(|v| left.ends_with(**v))
        .is_some_and(|v| v.chars().count() > 1 || DONE.iter().any(|w| left.contains(w)));
    if passed_on && (right.is_empty() || REFERRED_FOR.iter().any(|v| right_head.contains(v))) {
        return Some((UnitRole::Referred, span("")));
    }
    if ASK.iter().any(|v| left.ends_with(v)) {
        // Asked to look into it: referred; asked anything else ("要求市住建局及时跟踪督办"): neither
        // referred nor a handler on this phrase.
        let looks_into =
            investigates(&right) || REFERRED_FOR.iter().any(|v| right_head.contains(v));
        return looks_into.then(|| (UnitRole::Referred, span("")));
    }
    // The object of what another unit did ("经X对县Y医院调查核实") did not act itself.
    if REFER.iter().any(|v| left.ends_with(v)) || left.ends_with('对') {
        return None;
    }
    // Advice to the citizen ("请向X反映", "可致电X") names a unit that did nothing yet; after
    // "和"/"与" the actor is someone else with the unit ("学校正和A2区城管局进行协调"); and
    // "在2017年7月X清理…时" dates a past event, not the handling.
    if ADVICE.iter().any(|v| left.ends_with(v))
        || ["和", "与", "同", "跟", "及"]
            .iter()
            .any(|c| left.ends_with(c))
        || (left.contains('在') && right.ends_with('时'))
    {
        return None;
    }
    // The object of someone else's verb ("街道组织业主代表、市国土局工作人员召开了协调会") is not
    // the actor of what follows, nor is a partner the reply's own unit checked with ("经与X核实").
    if OBJECT_OF.iter().any(|v| left.contains(v))
        || ["经与", "经过与", "通过与"]
            .iter()
            .any(|v| left.contains(v))
    {
        return None;
    }
    let acted_now = strip_words(strip_time(acted), LEAD_INS);
    // An action counts when it was done ("已", "了", "立即", on site), not as a step of a
    // procedure the reply explains ("2、市司法局受理并审查材料").
    let done = |s: &str| DONE.iter().any(|w| s.contains(w));
    let handler = ((left.ends_with('经') || left.ends_with("经过")) && investigates(&right_head))
        || right.chars().take(8).collect::<String>().contains("重视")
        || PROMPTLY.iter().any(|w| right.starts_with(w))
        || INVESTIGATE.iter().any(|v| acted.starts_with(v))
        || (ACT.iter().any(|v| acted_now.starts_with(v)) && (done(&left) || done(&right)))
        || ((right.starts_with('对') || right.starts_with("已对"))
            && (right.contains("进行") || right.contains("开展"))
            && investigates(&right))
        // "A9市X街道工作人员对…进行了检查", "X局执法人员上门核实": its staff acted on the case.
        || (STAFF.iter().any(|w| right.starts_with(w))
            // ("上门" is no time: `acted`, before times are stripped, is read too.)
            && (ON_SITE
                .iter()
                .any(|v| acted.starts_with(v) || acted_now.starts_with(v))
                || ((acted_now.starts_with('对') || acted_now.starts_with("已对"))
                    && investigates(acted_now))))
        || (left.ends_with("现将")
            && [
                "调查", "处理", "核实", "办理", "答复", "回复", "核查", "办复",
            ]
            .iter()
            .any(|v| right.trim_start_matches('的').starts_with(v)));
    if handler {
        return Some((UnitRole::Handler, span("")));
    }
    // "收到您的留言后，X…": the unit that received the case acts on it.
    if left.is_empty() {
        let before = previous_clause(chars, start);
        if before.ends_with('后')
            && ["收到", "接到", "获悉", "接件"]
                .iter()
                .any(|w| before.contains(w))
        {
            return Some((UnitRole::Handler, format!("{before}，{}", span(""))));
        }
    }
    None
}

/// Whether `i` is inside 《…》 or “…” (a document's or a post's title).
/// A mark left open for longer than [`LONGEST_TITLE`] (or [`LONGEST_QUOTE`]) characters was never closed ("您在平台《问政
/// 西地省7月29日，收到…"): it opens no title.
fn inside_quotes(chars: &[char], i: usize) -> bool {
    let mut open: Vec<(char, usize)> = Vec::new();
    for (k, &c) in chars[..i].iter().enumerate() {
        match c {
            '《' | '“' => open.push((c, k)),
            '》' | '”' => {
                let opener = if c == '》' { '《' } else { '“' };
                if let Some(p) = open.iter().rposition(|&(o, _)| o == opener) {
                    open.truncate(p);
                }
            }
            _ => {}
        }
    }
    open.iter().any(|&(c, k)| {
        i - k
            <= if c == '《' {
                LONGEST_TITLE
            } else {
                LONGEST_QUOTE
            }
    })
}

/// The longest title (in characters) a reply encloses in 《…》.
const LONGEST_TITLE: usize = 60;
/// The longest quote (a complaint's words) a reply encloses in “…”.
const LONGEST_QUOTE: usize = 300;

/// The clause before the one that starts at or before `start`.
fn previous_clause(chars: &[char], start: usize) -> String {
    let mut s = start;
    while s > 0 && !is_clause_break(chars[s - 1]) {
        s -= 1;
    }
    if s == 0 {
        return String::new();
    }
    let e = s - 1;
    let mut b = e;
    while b > 0 && !is_clause_break(chars[b - 1]) && e - b < 40 {
        b -= 1;
    }
    text(chars, b, e)
}

/// `s` less a time at its start ("于2017年3月底", "5月12日").
fn strip_time(s: &str) -> &str {
    let rest = s.strip_prefix('于').unwrap_or(s);
    let after = rest.trim_start_matches(|c: char| {
        c.is_ascii_digit() || "年月日号底初中旬上下午时分至".contains(c)
    });
    if after.len() < rest.len() {
        after.trim_start_matches(['，', ','])
    } else {
        s
    }
}

/// `s` less any of `words` at its start, repeatedly.
fn strip_words<'s>(mut s: &'s str, words: &[&str]) -> &'s str {
    'strip: loop {
        for w in words {
            if let Some(rest) = s.strip_prefix(w) {
                s = rest;
                continue 'strip;
            }
        }
        return s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped directory (the A…M cities of the shared data) and alias table.
    fn shipped() -> (UnitDirectory, UnitAliases) {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/units.toml"));
        (UnitDirectory::load(path).unwrap(), UnitAliases::builtin())
    }

    /// (name, role) of every unit, in the order the reply names them.
    fn roles(reply: &str, complaint: &str) -> Vec<(String, UnitRole)> {
        let (directory, aliases) = shipped();
        extract_units(reply, complaint, &directory, &aliases)
            .into_iter()
            .map(|u| (u.name, u.role))
            .collect()
    }

    fn handler_names(reply: &str, complaint: &str) -> Vec<String> {
        let (directory, aliases) = shipped();
        let units = extract_units(reply, complaint, &directory, &aliases);
        handlers(&units).map(|u| u.name.clone()).collect()
    }

    #[test]
    fn the_written_district_is_the_one_in_front_of_the_name() {
        let (directory, _) = shipped();
        let districts = DistrictNames::new(&directory);
        let chars = |s: &str| s.chars().collect::<Vec<char>>();
        let (reply, complaint) = (
            chars("经A3区洋湖街道核实，洋湖街道已处理。"),
            chars("洋湖街道积水"),
        );
        let texts: [&[char]; 2] = [&reply, &complaint];
        assert_eq!(
            written_district(&texts, "洋湖", &districts).as_deref(),
            Some("A3区")
        );
        // No district in front of it, or two different ones: none.
        assert_eq!(written_district(&texts[1..], "洋湖", &districts), None);
        let two = chars("A3区洋湖街道、A5区洋湖街道");
        assert_eq!(written_district(&[&two], "洋湖", &districts), None);
        // "A市" is a city, no place's district.
        let city = chars("A市洋湖街道");
        assert_eq!(written_district(&[&city], "洋湖", &districts), None);
    }

    #[test]
    fn first_characters_find_the_name_a_full_scan_finds() {
        let (directory, aliases) = shipped();
        let districts = DistrictNames::new(&directory);
        let reply =
            "A市A3区洋湖街道、A7县住建局、市住建局和县公安局J1区分局已核实，A市城管局回复。";
        let chars: Vec<char> = reply.chars().collect();
        for i in 0..=chars.len() {
            let scanned = districts
                .names
                .iter()
                .find(|(n, _)| starts_with(&chars, i, n))
                .map(|(n, d)| (i + n.len(), d.name.clone()));
            let indexed = districts
                .at(&chars, i)
                .map(|(end, d)| (end, d.name.clone()));
            assert_eq!(indexed, scanned, "district at {i}");
            let scanned = aliases
                .names
                .iter()
                .position(|f| starts_with(&chars, i, &f.chars));
            let names = &aliases.names;
            let indexed = aliases
                .name_starts
                .first_match(&chars, i, |k| &names[k].chars);
            assert_eq!(indexed, scanned, "unit name at {i}");
        }
        assert!(
            districts.at(&chars, 0).is_some(),
            "the text names districts"
        );
    }

    #[test]
    fn builtin_table_parses_and_normalises_short_forms() {
        let aliases = UnitAliases::builtin();
        assert_eq!(aliases.canonical("住建局").unwrap().0, "住房和城乡建设局");
        assert_eq!(
            aliases.canonical("人社局").unwrap().0,
            "人力资源和社会保障局"
        );
        assert_eq!(
            aliases.canonical("城管局").unwrap().0,
            "城市管理和综合执法局"
        );
        assert_eq!(aliases.canonical("卫健委").unwrap().0, "卫生健康委员会");
        assert_eq!(aliases.canonical("教育局").unwrap().1, UnitKind::Bureau);
        assert!(aliases.canonical("洋湖").is_none());
    }

    #[test]
    fn a_bad_alias_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aliases.toml");
        std::fs::write(&path, "[[unit]]\nname = 1\n").unwrap();
        let err = UnitAliases::load(&path).unwrap_err().to_string();
        assert!(err.contains("aliases.toml"), "{err}");
        assert!(UnitAliases::load(&dir.path().join("missing.toml")).is_err());
    }

    #[test]
    fn full_name_in_a_signature_maps_to_the_directory_id() {
        let (directory, aliases) = shipped();
        let reply = "感谢您对我们工作的理解和支持！ A7县住房和城乡建设局 2015年10月22日";
        let units = extract_units(
            reply,
            "A7县恒大翡翠华庭的房子问题多多",
            &directory,
            &aliases,
        );
        assert_eq!(units.len(), 1);
        let unit = &units[0];
        assert_eq!(unit.name, "A7县住房和城乡建设局");
        assert_eq!(unit.id, "A7县-housing");
        assert_eq!(unit.district.as_deref(), Some("A7县"));
        assert_eq!(unit.kind, UnitKind::Bureau);
        assert_eq!(unit.role, UnitRole::Handler);
        assert!(unit.evidence.contains("signature"), "{}", unit.evidence);
    }

    #[test]
    fn short_forms_normalise_and_two_handlers_are_both_kept() {
        // 3692 and 3681 of the shared data.
        assert_eq!(
            handler_names(
                "您的留言已收悉。经A5区人防办、洞井街道调查核实，现将有关情况回复如下",
                "A5区鄱阳村D区安置房人防工程的咨询"
            ),
            ["A5区人民防空办公室", "A5区洞井街道"]
        );
        assert_eq!(
            handler_names(
                "一、关于小区附近幼儿园的问题。经A5区教育局、黎托街道核实，东澜湾幼儿园属于江河东澜湾小区配套幼儿园",
                "反映A5区东澜湾社区居民的集体民生诉求"
            ),
            ["A5区教育局", "A5区黎托街道"]
        );
        let (directory, aliases) = shipped();
        let units = extract_units(
            "经A2区人社局核实，该企业已补缴社保。",
            "A2区某公司不缴社保",
            &directory,
            &aliases,
        );
        assert_eq!(units[0].name, "A2区人力资源和社会保障局");
        assert_eq!(units[0].id, "A2区-hrss");
    }

    #[test]
    fn city_prefix_is_the_complaints_city_and_a_referral_is_not_the_handler() {
        // 2557: 市住建局 handled it and passed it to the center.
        let units = roles(
            "您在平台《问政西地省》上的留言已收悉，市住建局及时将您反映的问题交由市房屋交易管理中心办理。现将相关情况回复如下",
            "在A市买公寓能享受人才新政购房补贴吗？",
        );
        assert_eq!(
            units,
            [
                ("A市住房和城乡建设局".to_string(), UnitRole::Handler),
                ("A市房屋交易管理中心".to_string(), UnitRole::Referred),
            ]
        );
    }

    #[test]
    fn district_prefix_is_the_complaints_district() {
        // 8763: the complaint names only the city; the reply's own district narrows it.
        assert_eq!(
            handler_names(
                "您的留言已收悉。经区城乡建设局调查核实，现将有关情况回复如下：审批通过后，市财政50%资金将拨付至A1区财政。",
                "关于A市精装修补贴发放问题的咨询"
            ),
            ["A1区住房和城乡建设局"]
        );
        // "区" against a county's complaint is unresolved: no gold rather than a guess.
        assert!(handler_names("经区教育局调查核实，情况属实。", "A7县某学校乱收费").is_empty());
        // "市" in a county-level city is its own bureau or the city's: no gold.
        assert!(handler_names("经市教育局调查核实，情况属实。", "A9市某学校乱收费").is_empty());
    }

    #[test]
    fn self_reference_resolves_only_when_the_reply_names_itself() {
        // 126967: the town names itself in its thanks.
        assert_eq!(
            handler_names(
                "网友您好：感谢您对卢峰镇政府工作的关心与支持。接到信访交办单后，我镇高度重视，立即组织镇村两级干部进行调查",
                "请求有关部门处理L5县哑桥战备公路哑塘分路处淹水路段"
            ),
            ["L5县卢峰镇"]
        );
        // 9616: "我局" and no name anywhere.
        assert!(handler_names(
            "很感谢您的建议，我局经实地勘察后，在下一步线网优化中考虑您的建议，感谢您的来信。",
            "A市双水湾小区住户反映707路公交线路不合理"
        )
        .is_empty());
        // 29833: the only 局 named is another one (the city's), so "我局" stays unresolved.
        assert!(handler_names(
            "我局没有审批更改权限，建议您向省、市交通部门反映相关问题。线路报请市交通局批准后实施。",
            "请求为A6区雷峰大道增加交通出行方式"
        )
        .is_empty());
        // 25567: a bureau thanking on its own behalf names itself.
        assert_eq!(
            handler_names(
                "接到投诉后我局派工作人员到你小区查看。感谢您对我县住房保障局工作的关心与支持。",
                "投诉A7县星沙金科时代中心房屋存在严重安全隐患"
            ),
            ["A7县住房保障局"]
        );
    }

    #[test]
    fn a_referral_is_the_handler_only_when_no_other_is_named() {
        // 131024: forwarded, nothing else named.
        let (directory, aliases) = shipped();
        let units = extract_units(
            "您反映的问题已转交县住建局核实、办理。2019年12月12日",
            "投诉L9县县巴黎春天未按合同时间交房、办证",
            &directory,
            &aliases,
        );
        assert_eq!(units.len(), 1);
        assert_eq!(units[0].name, "L9县住房和城乡建设局");
        assert_eq!(units[0].role, UnitRole::Handler);
        assert!(
            units[0].evidence.contains("referred"),
            "{}",
            units[0].evidence
        );
        // Asked to investigate by a unit that is itself named as handling it.
        assert_eq!(
            roles(
                "A8县住房保障局高度重视，已责成A8县房产公司进行调查。",
                "请求处理A8县和泰家园8栋业主违规开门行为"
            )
            .iter()
            .map(|(n, r)| (n.as_str(), *r))
            .collect::<Vec<_>>(),
            [
                ("A8县住房保障局", UnitRole::Handler),
                ("A8县房产公司", UnitRole::Referred)
            ]
        );
    }

    #[test]
    fn relaying_offices_titles_and_bare_replies_give_no_gold() {
        // 21641: the county's publicity office only passed the message on, within the county:
        // no office of its own is the handler, the county's government is.
        let units = roles(
            "你好，我们已将你的留言转交至相关部门，欢迎你继续关注我们的工作，关注A7县的发展。 A7县网络宣传管理办公室2011年12月9日",
            "反映两个关于A7县红绿灯的问题",
        );
        assert_eq!(
            units,
            [
                ("A7县网络宣传管理办公室".to_string(), UnitRole::Mentioned),
                ("A7县人民政府".to_string(), UnitRole::Handler),
            ]
        );
        // 118496: a unit inside a post's title is no actor ("派出所" is not "派员").
        assert!(handler_names(
            "就您所反映的问题K6县公安局已于2019年3月6日，在《K6县梅花镇派出所申请多次不帮我更改错误年龄》一帖中作了回复。",
            "K6县梅花镇东风村村民请求更正身份证年龄"
        )
        .is_empty());
        // A government attaching importance is no routing target.
        assert!(
            handler_names("近年来，A7县委、县政府十分重视，加大投入力度。", "A7县体育").is_empty()
        );
        assert!(roles("网友：您好！留言已收悉", "请求停止K7县龙凤巷乱摆夜宵摊现象").is_empty());
    }

    #[test]
    fn found_wrong_in_the_hand_checks_and_now_left_out() {
        // 139745: a forward to the e-government hub that hosts the hotline is no handling by the
        // hub; the case stays in the county, whose government is the handler.
        assert_eq!(
            handler_names(
                "您的留言收悉，已于2019年3月12日转交M3县电子政务管理办公室办理。",
                "请求修缮M3县上渡街道那条稀烂的路"
            ),
            ["M3县人民政府"]
        );
        // 23153: in "A8县市" (a county become a city) "市教育局" is ambiguous.
        assert!(handler_names(
            "我们要求市教育局进行了调查核实。欢迎您拨打A8县市教育局普教科电话。",
            "强烈反对A8县玉潭中心小学以小班额为名建精英班"
        )
        .is_empty());
        // 29798: a step of a procedure is not a referral of this case.
        assert!(handler_names(
            "到社区进行登记，经乡镇劳动保障站审核，交A6区人社局就业促进科复核后办理证件。",
            "咨询A6区就业失业登记证办理事宜"
        )
        .is_empty());
        // 2759: a phone number is no date, and "致电" is no part of a street's name.
        assert_eq!(
            handler_names(
                "A3区学士街道、含浦街道高度重视，现回复如下：请您致电学士街道0731-0000-00000000反映。",
                "A3区含浦镇马路卫生很差"
            ),
            ["A3区学士街道", "A3区含浦街道"]
        );
        // 22991: "要求" is no part of a street's name either.
        assert_eq!(
            roles(
                "您的留言已收悉，我们立即要求玉潭街道进行调查了解，现将有关情况答复如下",
                "反映A8县市横街巷老旧危房问题"
            ),
            [("A8县玉潭街道".to_string(), UnitRole::Handler)]
        );
        // 33744: a unit in the list of whom a street gathered did not act itself.
        assert!(!handler_names(
            "11月30日，茨菇塘街道办事处组织业主代表、开发商、物业公司、市国土局工作人员召开了协调会",
            "反映B1区世贸广场二期车库归属与停车问题"
        )
        .contains(&"B市自然资源和规划局".to_string()));
    }

    #[test]
    fn a_case_forwarded_to_a_district_goes_to_its_government() {
        let (directory, aliases) = shipped();
        // 74589, 32728: the city's hub forwards to the district and names nothing else.
        for reply in [
            "您的留言已收悉。关于您反映的问题，已转F1区调查处理。",
            "您通过平台《问政西地省》的留言收悉，已转F1区有关部门调查核处，如有相关情况将及时反馈，谢谢！",
            "您所反映的问题我们已经受理，并已交办给F1区政府进行处理。",
        ] {
            let units = extract_units(reply, "F市F1区某路段积水", &directory, &aliases);
            let handlers: Vec<_> = handlers(&units).collect();
            assert_eq!(handlers.len(), 1, "{reply}: {units:?}");
            assert_eq!(handlers[0].name, "F1区人民政府");
            assert_eq!(handlers[0].kind, UnitKind::DistrictGovernment);
        }
        // Something more specific named: that unit, not the government.
        assert_eq!(
            handler_names(
                "已转B7县有关部门答复反馈，谢谢！网友：您好！您反映的问题，县林业局高度重视，及时安排人员进行查询。",
                "B7县油茶林补贴"
            ),
            ["B7县林业局"]
        );
        // A whole city is no district: "已转A市有关部门" names no one.
        assert!(handler_names("已转A市有关部门调查处理。", "A市某小区停水").is_empty());
    }

    #[test]
    fn doubled_level_characters_of_the_anonymisation_are_read_through() {
        // 135769, 22953: "L10县县住建局", "A8县市市场监督管理局".
        let (directory, aliases) = shipped();
        let units = extract_units(
            "感谢您的支持！L10县县住建局2014年4月24日",
            "L10县县某小区漏水",
            &directory,
            &aliases,
        );
        assert_eq!(units[0].name, "L10县住房和城乡建设局");
        assert_eq!(units[0].id, "L10县-housing");
        assert_eq!(
            handler_names(
                "收到您反映的情况后，A8县市市场监督管理局组织工作人员到现场检查。",
                "A8县某超市卖过期食品"
            ),
            ["A8县市场监督管理局"]
        );
        // "市场" after a county is its own word, and "区长" is no unit.
        assert_eq!(
            handler_names(
                "经A8县市场监督管理局调查核实，情况属实。",
                "A8县某超市卖过期食品"
            ),
            ["A8县市场监督管理局"]
        );
    }

    #[test]
    fn a_reply_that_names_itself_is_its_handler() {
        // 10792: "我局A2区工商分局"; a signature dated in Chinese numerals; thanks on its own behalf.
        assert_eq!(
            handler_names(
                "我局A2区工商分局执法人员已告知当事人。",
                "投诉A2区白沙花园开网咖"
            ),
            ["A2区工商分局"]
        );
        assert_eq!(
            handler_names(
                "感谢您的监督。 A7县城市管理和行政执法局 二〇一三年十月九日",
                "城东小区夜宵店占道经营"
            ),
            ["A7县城市管理和综合执法局"]
        );
        assert_eq!(
            handler_names(
                "您好！来信已收悉。感谢您对A7县教育局工作的关心与支持。",
                "A7县某学校乱收费"
            ),
            ["A7县教育局"]
        );
    }

    #[test]
    fn found_wrong_in_the_second_hand_check() {
        // 47759: a year inside a sentence is no signature's date ("X2016年前没有收到…").
        assert!(handler_names(
            "网友：您好！经调查，C市高新区双马中心学校2016年前没有收到农村贫困寄宿生补助经费。",
            "咨询C市双马中心学校农村贫困寄宿生的补助问题"
        )
        .is_empty());
        // 135409: "向我局不动产登记中心提交" names where to apply, not the reply's own unit.
        assert!(handler_names(
            "至今，该公司都未向我局不动产登记中心提交过登记申请。",
            "请求办理L10县汇鑫国际商业广场商铺不动产权证"
        )
        .is_empty());
        // 25302: a company the bureau checked with ("经与X核实") did not handle the case.
        assert!(handler_names(
            "经与运营该路公交的A7县星沙公共交通有限公司核实，该线路发车间隔为15-20分钟。",
            "反映A7县星沙204公交车的两个现象"
        )
        .is_empty());
        // 18995: a city written before a town's name is not the town's district.
        assert!(handler_names(
            "感谢您的关心。安沙镇人民政府 2015年4月29日",
            "咨询A市安沙发展规划"
        )
        .is_empty());
    }

    #[test]
    fn a_forward_to_a_unit_the_alias_table_lacks_names_it_with_its_level() {
        // The level character gives the district (the complaint's county, its city); the name
        // ends as a unit does. "和" inside a bureau's name joins its parts.
        assert_eq!(
            handler_names(
                "网友：您好！您反映的问题已转县粮油储备中心核查、办复。",
                "L5县某粮站收购价格问题"
            ),
            ["L5县粮油储备中心"]
        );
        assert_eq!(
            handler_names("您反映的问题已转市商务和物流局调查核处。", "L5县某商场问题"),
            ["L市商务和物流局"]
        );
        // Not a name of one unit: "和" joins a field and a school.
        assert!(handler_names(
            "感谢您对L5县教育和红星学校的关心与支持！",
            "L5县红星学校收费问题"
        )
        .is_empty());
        // "经开区" is a zone's name, not the prefix "区".
        assert!(handler_names("经开区某某分局已责令其整改。", "L5县某工地问题").is_empty());
    }

    #[test]
    fn a_title_mark_left_open_does_not_hide_the_rest_of_the_reply() {
        // "《问政…" is never closed: the forward at the end is read all the same.
        assert_eq!(
            handler_names(
                "网友您好!您在平台《问政西地省7月29日，收到投诉后，我们高度重视，组织了整治。\
                 感谢您的关心。2019年7月30日网友：您好！您反映的问题已转县城管局核查、办复。",
                "投诉L5县某菜市场占道经营"
            ),
            ["L5县城市管理和综合执法局"]
        );
    }

    #[test]
    fn a_unit_that_answered_on_a_date_and_not_the_object_of_anothers_check() {
        assert_eq!(
            handler_names(
                "L5县公安局于2018年9月18日在网上进行了明确答复，请查阅。",
                "L5县某处治安问题"
            ),
            ["L5县公安局"]
        );
        // "经X对县Y医院调查核实": Y was checked, X did it.
        assert_eq!(
            handler_names(
                "经L5县卫生健康局对县某某民营医院调查核实，该院已整改。",
                "举报L5县某某民营医院"
            ),
            ["L5县卫生健康委员会"]
        );
    }

    #[test]
    fn a_units_staff_acting_on_the_case_make_it_the_handler() {
        assert_eq!(
            handler_names(
                "14日，A3区洋湖街道工作人员对该麻将馆进行了检查，责令其整改。",
                "投诉A3区某小区麻将馆扰民"
            ),
            ["A3区洋湖街道"]
        );
        assert_eq!(
            handler_names(
                "A5区教育局执法人员上门核实，该机构未取得办学许可。",
                "举报A5区某培训机构无证办学"
            ),
            ["A5区教育局"]
        );
        // Staff named beside a plan, not an action on this case: no handler.
        assert!(
            handler_names("A3区教育局工作人员将于下月开展培训。", "咨询A3区教师培训").is_empty()
        );
    }

    #[test]
    fn a_district_branch_of_a_city_bureau_is_the_districts() {
        // 91084's signature.
        assert_eq!(
            handler_names(
                "目前，王霖已就其看病发生的住院费向法院提起诉讼。 J市公安局J1区分局2015年7月16日",
                "居民投诉郴汽集团职工装修房子扰民"
            ),
            ["J1区公安局"]
        );
    }

    #[test]
    fn another_citys_directory_routes_by_its_own_names() {
        // Nothing above is specific to the shared data: a directory with other places and units
        // (and no past replies) gets its own ids.
        let directory = UnitDirectory::from_toml(
            r#"
            [[district]]
            name = "北京市"
            [[district]]
            name = "朝阳区"
            parent = "北京市"

            [[unit]]
            id = "cy-edu"
            name = "朝阳区教育委员会"
            aliases = ["朝阳区教委"]
            categories = ["教育"]
            districts = ["朝阳区"]
            "#,
        )
        .unwrap();
        let aliases = UnitAliases::builtin();
        let units = extract_units(
            "经朝阳区教委调查核实，该校已退还费用。",
            "朝阳区某小学乱收费",
            &directory,
            &aliases,
        );
        assert_eq!(units.len(), 1);
        assert_eq!(units[0].id, "cy-edu");
        assert_eq!(units[0].role, UnitRole::Handler);
        let units = extract_units(
            "望京街道高度重视，立即组织人员现场查看。",
            "朝阳区望京街道路灯不亮",
            &directory,
            &aliases,
        );
        assert_eq!(units[0].name, "朝阳区望京街道");
        assert_eq!(units[0].id, "朝阳区望京街道");
        assert_eq!(units[0].kind, UnitKind::Street);
        assert_eq!(units[0].role, UnitRole::Handler);
    }
}
