//! Injection detection: rule families over two views of the prompt, and a risk score.
//!
//! Each rule describes a *technique* (overriding instructions, extracting the system prompt,
//! adopting a jailbreak persona, …), never one known sentence, and belongs to a family with a
//! weight. All rules are compiled once into one set (regex-automata's meta engine, what
//! `RegexSet` wraps), which answers "which rules match" in a single linear-time pass over text
//! rewritten in the rules' alphabet (`alphabet.rs`: one byte per kind of character no rule
//! spells, which keeps the set a seventh of the size of one with Unicode classes), and run over
//! two views: the lower-cased normalized text (rules for Cyrillic or Chinese need the real
//! letters), whole, and the folded text (look-alikes, leetspeak and spacing undone) around the
//! lines folding changed. A match only the folded view shows is itself a signal
//! (`obfuscation`). What a set cannot do is done here too: base64 and hex blocks are decoded and
//! rescanned, Unicode tag characters are counted, and token floods are measured (`flood.rs`).
//!
//! The score combines families as independent evidence: `1 - Π(1 - weight)` over the strongest
//! rule of each matched family. One strong technique crosses the default threshold of 0.5 alone;
//! weak hints (a mention of "the password", a role-play frame) need a second one.

use std::ops::Range;
use std::sync::{LazyLock, OnceLock};

use base64::Engine as _;
use regex::Regex;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind, PatternSet, meta, nfa::thompson::WhichCaptures};
use serde::Serialize;

use super::alphabet::Alphabet;
use super::code;
use super::flood::token_flood;
use super::fold::{Folded, fold, fold_changes, lower_marked};
use super::learned::{MIN_EVIDENCE, Model};
use super::normalize::{Hidden, normalize};
pub use super::rules::Category;
use super::rules::RULES;

/// Where a rule matched: byte offsets into the view it matched in. Safe to log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub category: Category,
    pub rule: usize,
    pub start: usize,
    pub end: usize,
}

struct Detector {
    /// All rules in one set. Normally rewritten to read text in [`Alphabet`] (`alphabet` is
    /// then set): 2.3 MB against 16.1 MB for the same rules with Unicode classes, which are used
    /// over the text as it is only if the rewriting failed (a bug the unit tests catch, logged at
    /// start-up).
    set: meta::Regex,
    alphabet: Option<Alphabet>,
    /// One regex per rule, for the span of a finding. Built the first time its rule fires: only
    /// suspicious prompts need spans, and all of them compiled up front held 8 MB of NFAs that
    /// most processes never touch (measured; the set above is what every prompt needs).
    regexes: Vec<OnceLock<Option<Regex>>>,
}

/// A rule's pattern as the Unicode set and the span regexes compile it: every `\b` made a
/// boundary the DFA engines can evaluate on any text.
///
/// The regex crate's DFAs cannot evaluate a Unicode word boundary on non-ASCII input: one `é`,
/// emoji or line of Japanese in a prompt sent the whole set to its slowest engine (~90 ms for
/// 10,000 characters). An ASCII boundary (`(?-u:\b)`) is evaluated by the DFAs on every input
/// and means the same thing next to the ASCII letters the rules spell. Rules that spell
/// non-ASCII words (German, French, Spanish, Cyrillic, CJK) would miss with an ASCII boundary
/// before `ü` or `и`, so theirs are dropped: the words are long and distinctive enough that a
/// boundary adds little, and the development set's figures are unchanged (BENCHMARKS.md).
fn dfa_pattern(pattern: &str) -> String {
    if pattern.is_ascii() {
        pattern.replace(r"\b", r"(?-u:\b)")
    } else {
        pattern.replace(r"\b", "")
    }
}

/// The rules' patterns as the set and the span regexes read them.
fn patterns() -> Vec<String> {
    RULES.iter().map(|r| dfa_pattern(r.pattern)).collect()
}

/// All rules as one set that reports every rule that matches (what `regex::RegexSet` builds,
/// built here so a scan can be limited to a range; see [`Detector::matches_in`]), with Unicode
/// classes, over text as it is.
fn unicode_set(patterns: &[String]) -> Option<meta::Regex> {
    meta::Builder::new()
        .configure(set_config(true))
        .syntax(syntax::Config::new().unicode(true).utf8(true))
        .build_many(patterns)
        .map_err(|e| tracing::error!(error = %e, "sanitizer rules failed to compile"))
        .ok()
}

fn set_config(utf8: bool) -> meta::Config {
    meta::Config::new()
        .match_kind(MatchKind::All)
        .utf8_empty(utf8)
        .which_captures(WhichCaptures::None)
        .nfa_size_limit(Some(64 << 20))
        .hybrid_cache_capacity(64 << 20)
}

/// The rules rewritten for their alphabet, as one set over rewritten text.
fn alphabet_set(patterns: &[String]) -> Result<(Alphabet, meta::Regex), String> {
    let hirs = syntax::parse_many_with(patterns, &syntax::Config::new().unicode(true).utf8(true))
        .map_err(|e| e.to_string())?;
    let (alphabet, rules) = Alphabet::for_rules(&hirs).map_err(|e| e.to_string())?;
    let set = meta::Builder::new()
        .configure(set_config(false))
        .build_many_from_hir(&rules)
        .map_err(|e| e.to_string())?;
    Ok((alphabet, set))
}

static DETECTOR: LazyLock<Option<Detector>> = LazyLock::new(|| {
    let patterns = patterns();
    let (set, alphabet) = match alphabet_set(&patterns) {
        Ok((alphabet, set)) => (set, Some(alphabet)),
        Err(e) => {
            // Still correct, only larger: say so where it is seen.
            tracing::error!(
                error = %e,
                "sanitizer rules not rewritten for their alphabet; scanning with Unicode classes"
            );
            (unicode_set(&patterns)?, None)
        }
    };
    let regexes = patterns.iter().map(|_| OnceLock::new()).collect();
    Some(Detector {
        set,
        alphabet,
        regexes,
    })
});

/// How far around a line folding changed the folded view is scanned again: at least this many
/// lines and this many bytes on each side, out to whole lines. The plain view is scanned whole;
/// the folded view differs from it only on the changed lines, so a rule that matches in the
/// folded view and not in the plain one must overlap a changed line. Every rule's gaps are
/// bounded (`{0,80}`, `[\s\S]{0,200}`, at most eight lines for a faked transcript) well inside
/// this margin, except runs of one word or of whitespace, which normalization keeps short; so
/// the folded scan finds what a whole-text scan would on any realistic text, and the usual
/// prompt with one disguised-looking line costs one scan and a little, not two.
const FOLD_MARGIN_LINES: usize = 8;
const FOLD_MARGIN_BYTES: usize = 1024;

impl Detector {
    /// Indices of the rules that match `text`.
    fn matches(&self, text: &str) -> Vec<usize> {
        self.matches_in(text, 0..text.len())
    }

    /// Indices of the rules with a match inside `range` of `text` (on character boundaries).
    /// The range bounds the matches, not what look-around sees: `\b`, `^` and `$` read the
    /// character on each side of it.
    fn matches_in(&self, text: &str, range: Range<usize>) -> Vec<usize> {
        let end = range.end.min(text.len());
        let start = range.start.min(end);
        let mut found = PatternSet::new(self.set.pattern_len());
        match &self.alphabet {
            None => {
                let input = Input::new(text).range(start..end);
                self.set.which_overlapping_matches(&input, &mut found);
            }
            Some(alphabet)
                if (start == 0 && end == text.len())
                    || !text.is_char_boundary(start)
                    || !text.is_char_boundary(end) =>
            {
                // The whole text (also for a range that is not on character boundaries, which
                // the callers never pass: a wider scan is the safe answer).
                let hay = alphabet.rewrite(text);
                self.set
                    .which_overlapping_matches(&Input::new(&*hay), &mut found);
            }
            Some(alphabet) => {
                // The range and one character on each side, for the look-around to read.
                let before = text[..start].chars().next_back().map_or(0, char::len_utf8);
                let after = text[end..].chars().next().map_or(0, char::len_utf8);
                let hay = alphabet.rewrite(&text[start - before..end + after]);
                let head = alphabet.rewrite(&text[start - before..start]).len();
                let tail = alphabet.rewrite(&text[end..end + after]).len();
                let input = Input::new(&*hay).range(head..hay.len() - tail);
                self.set.which_overlapping_matches(&input, &mut found);
            }
        }
        found.iter().map(|p| p.as_usize()).collect()
    }

    /// Rules that match the folded view somewhere near a line folding changed.
    fn matches_near(&self, folded: &Folded) -> Vec<usize> {
        let text = folded.text.as_str();
        let mut hits: Vec<usize> = Vec::new();
        let mut windows: Vec<Range<usize>> = Vec::new();
        for r in &folded.changed {
            let w = around(text.as_bytes(), r.clone());
            match windows.last_mut() {
                Some(last) if w.start <= last.end => last.end = last.end.max(w.end),
                _ => windows.push(w),
            }
        }
        for w in windows {
            for i in self.matches_in(text, w) {
                if !hits.contains(&i) {
                    hits.push(i);
                }
            }
        }
        hits
    }
}

/// `changed` widened by [`FOLD_MARGIN_LINES`] and [`FOLD_MARGIN_BYTES`] on each side, out to
/// whole lines (or the ends of the text).
fn around(text: &[u8], changed: Range<usize>) -> Range<usize> {
    // Line by line (memchr finds each break), stopping at a line start once both margins are
    // passed.
    let mut start = changed.start.min(text.len());
    let mut lines = 0;
    loop {
        let Some(nl) = memchr::memrchr(b'\n', &text[..start]) else {
            start = 0;
            break;
        };
        lines += 1;
        if lines > FOLD_MARGIN_LINES && changed.start.saturating_sub(nl + 1) >= FOLD_MARGIN_BYTES {
            start = nl + 1;
            break;
        }
        start = nl;
    }
    let mut end = changed.end.clamp(start, text.len());
    let mut lines = 0;
    loop {
        let Some(offset) = memchr::memchr(b'\n', &text[end..]) else {
            end = text.len();
            break;
        };
        let nl = end + offset;
        lines += 1;
        if lines > FOLD_MARGIN_LINES && nl.saturating_sub(changed.end) >= FOLD_MARGIN_BYTES {
            end = nl;
            break;
        }
        end = nl + 1;
    }
    start..end
}

/// The learned stage's weights (`learned.bin`, written by `spark-train`), read in place.
static MODEL: LazyLock<Option<Model>> = LazyLock::new(|| {
    Model::parse(include_bytes!("learned.bin"))
        .map_err(|e| tracing::error!(error = %e, "sanitizer model unreadable"))
        .ok()
});

/// The embedded model (the trainer reads it to check it reproduces it).
pub fn model() -> Option<&'static Model> {
    MODEL.as_ref()
}

/// Forces rule compilation and reads the model (at start-up, so the first request does not pay
/// for it) and says whether both worked. A rule that does not compile or a model that does not
/// parse is a bug caught by the unit tests; a gateway without them refuses to start.
pub fn ready() -> bool {
    DETECTOR.is_some() && MODEL.is_some() && code::ready()
}

/// The text the model reads: the lower-cased normalized prompt, folded where folding changes
/// it (the same view the rules read).
pub fn model_view(text: &str) -> String {
    let (lower, _) = lower_marked(&normalize(text));
    fold_changes(&lower).map_or(lower, |f| f.text)
}

/// The rules' verdict alone, without the model (for the trainer, which places the model's
/// evidence beside it).
pub fn assess_rules(text: &str) -> super::RiskReport {
    let normalized = normalize(text);
    assess_with(text, &Hidden::count(text), &normalized, None)
}

/// Assesses a prompt. `original` is the text as received (for signals normalization removes),
/// `normalized` the output of [`normalize`].
pub fn assess(original: &str, normalized: &str) -> super::RiskReport {
    assess_counted(original, &Hidden::count(original), normalized)
}

/// [`assess`] when what `original` hides has been counted already.
pub fn assess_counted(original: &str, hidden: &Hidden, normalized: &str) -> super::RiskReport {
    match MODEL.as_ref() {
        Some(model) => assess_with(original, hidden, normalized, Some(model)),
        // Fail closed, as for the rules below.
        None => super::RiskReport {
            risk_score: 1.0,
            categories: vec![Category::Classifier],
            findings: Vec::new(),
        },
    }
}

/// The weight of a comment that speaks to the assistant: enough to flag alone, because code
/// has no reason to address the model that writes it.
const CODE_INSTRUCTION: f64 = 0.6;

fn assess_with(
    original: &str,
    hidden: &Hidden,
    normalized: &str,
    model: Option<&Model>,
) -> super::RiskReport {
    let Some(d) = DETECTOR.as_ref() else {
        // Fail closed: if the rules could not be built, every prompt is suspect.
        return super::RiskReport {
            risk_score: 1.0,
            categories: vec![Category::HiddenCharacters],
            findings: Vec::new(),
        };
    };
    let mut acc = Accumulator::default();
    // The plain view maps the look-alikes of scripts no rule is written in; a rule that matches
    // across one of them is as obfuscated as one only the folded view shows.
    let (lower, look_alikes) = lower_marked(normalized);
    // Usually nothing was disguised and the two views are equal: fold nothing and scan once.
    // Otherwise the folded view is scanned only around the lines folding changed.
    let folded = fold_changes(&lower);

    let plain_hits: Vec<usize> = d.matches(&lower);
    let folded_hits: Vec<usize> = folded.as_ref().map_or_else(Vec::new, |f| d.matches_near(f));
    let mut only_folded = false;
    for &i in &plain_hits {
        if let Some((start, end)) = acc.add_rule(d, i, &lower) {
            only_folded |= look_alikes.iter().any(|&at| (start..end).contains(&at));
        }
    }
    for &i in &folded_hits {
        if !plain_hits.contains(&i) {
            only_folded = true;
            acc.add_rule(
                d,
                i,
                folded.as_ref().map_or(lower.as_str(), |f| f.text.as_str()),
            );
        }
    }
    if only_folded {
        acc.add(Category::Obfuscation, SIGNAL, 0.35, None);
    }

    // Encoded blocks: decode and rescan. A decoded instruction is stronger evidence than the
    // same words in clear, because encoding them has no benign purpose in a code request.
    for (start, end, kind) in encoded_blocks(normalized).into_iter().take(16) {
        let block = &normalized[start..end];
        let decoded = match kind {
            Encoding::Base64 => decode_base64(block),
            Encoding::Hex => decode_hex(block),
        };
        if let Some(decoded) = decoded {
            rescan(d, &decoded, start, end, &mut acc);
        }
    }

    // Unicode tag characters spell invisible ASCII: never part of a legitimate request.
    let (tags, invisible) = (hidden.tags, hidden.invisible);
    if tags >= 4 {
        acc.add(Category::HiddenCharacters, SIGNAL, 0.7, None);
        let spelled: String = original
            .chars()
            .filter_map(|c| {
                let cp = c as u32;
                (0xE0020..=0xE007E)
                    .contains(&cp)
                    .then(|| char::from_u32(cp - 0xE0000))
                    .flatten()
            })
            .collect();
        rescan(d, &spelled, 0, 0, &mut acc);
    } else {
        if invisible >= 3 && !acc.categories.is_empty() {
            acc.add(Category::HiddenCharacters, SIGNAL, 0.4, None);
        }
    }

    if let Some((start, end)) = token_flood(&lower) {
        acc.add(Category::TokenFlood, SIGNAL, 0.55, Some((start, end)));
    }

    // Pasted code's comments and string literals are read on their own as well (code.rs): an
    // instruction to the assistant hidden among code tokens is plain there.
    let comments = code::comments_and_strings(&lower);
    if let Some(comments) = &comments {
        match code::addresses_assistant(comments) {
            Some(true) => acc.add(Category::CodeInstruction, SIGNAL, CODE_INSTRUCTION, None),
            Some(false) => {}
            // Fail closed, as for the rules.
            None => acc.add(Category::CodeInstruction, SIGNAL, 1.0, None),
        }
    }
    // The learned stage reads the folded view where there is one: a disguise it undoes is
    // undone for the model too.
    if let Some(model) = model {
        let view = folded.as_ref().map_or(lower.as_str(), |f| f.text.as_str());
        let mut evidence = model.evidence(model.logit(view));
        // On the comments alone only a sure verdict counts: short comments are the kind of
        // text the model knows least.
        if let Some(comments) = &comments {
            let alone = model.evidence(model.logit(comments));
            if alone >= 0.5 {
                evidence = evidence.max(alone);
            }
        }
        if evidence >= MIN_EVIDENCE {
            acc.add(Category::Classifier, SIGNAL, evidence, None);
        }
    }
    acc.finish()
}

fn rescan(d: &Detector, decoded: &str, start: usize, end: usize, acc: &mut Accumulator) {
    let view = fold(&normalize(decoded));
    let hits = d.matches(&view);
    if !hits.is_empty() {
        let strongest = hits
            .iter()
            .map(|&i| RULES[i].weight)
            .fold(0.0_f64, f64::max);
        acc.add(
            Category::EncodedPayload,
            SIGNAL,
            strongest.max(0.6),
            Some((start, end)),
        );
        for &i in &hits {
            acc.add(RULES[i].category, i, RULES[i].weight, None);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Base64,
    Hex,
}

/// Byte spans that look like encoded payloads: runs of 16+ base64 (or base64url) characters,
/// and hex written solid (24+ digits) or as 12+ pairs split by spaces or colons (`69 67 6e …`).
/// One pass over the bytes; the alphabets are ASCII, so every span is a `str` boundary.
fn encoded_blocks(text: &str) -> Vec<(usize, usize, Encoding)> {
    let b = text.as_bytes();
    let is_b64 = |c: u8| B64[usize::from(c)];
    let mut out = Vec::new();
    // Spaced hex pairs: where the chain started, and how many pairs it holds.
    let mut pairs_start = 0usize;
    let mut pairs = 0usize;
    let mut i = 0;
    while i < b.len() {
        if !is_b64(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        // Letters and digits a word at a time; the other base64 characters one by one.
        loop {
            i += super::ascii::alphanumerics(&b[i..]);
            match b.get(i) {
                Some(&c) if is_b64(c) => i += 1,
                _ => break,
            }
        }
        let run = &b[start..i];
        // Most runs are words too short to be either kind of block: no need to read them again.
        if run.len() != 2 && run.len() < 16 {
            pairs = 0;
            continue;
        }
        let all_hex = run.iter().all(u8::is_ascii_hexdigit);
        if run.len() == 2 && all_hex {
            let chained = pairs > 0 && start >= 1 && matches!(b[start - 1], b' ' | b':');
            if !chained {
                pairs_start = start;
                pairs = 0;
            }
            pairs += 1;
            let next_continues =
                i + 1 < b.len() && matches!(b[i], b' ' | b':') && b[i + 1].is_ascii_hexdigit();
            if !next_continues && pairs >= 12 {
                out.push((pairs_start, i, Encoding::Hex));
            }
            if !next_continues {
                pairs = 0;
            }
            continue;
        }
        pairs = 0;
        if run.len() >= 24 && all_hex && run.len().is_multiple_of(2) {
            out.push((start, i, Encoding::Hex));
        } else if run.len() >= 16 {
            out.push((start, i, Encoding::Base64));
        }
    }
    out
}

/// Bytes of the base64 and base64url alphabets (and padding): a table, because the search
/// reads every byte of every prompt.
const B64: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'_' | b'-');
        b += 1;
    }
    t
};

fn decode_base64(s: &str) -> Option<String> {
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = engines.iter().find_map(|e| e.decode(s.as_bytes()).ok())?;
    printable_text(bytes)
}

fn decode_hex(s: &str) -> Option<String> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = digits
        .chunks(2)
        .map(|p| {
            let hi = (p[0] as char).to_digit(16)?;
            let lo = (p[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect();
    printable_text(bytes?)
}

/// Decoded bytes count as text only when they are UTF-8 and mostly letters and spaces, so
/// random identifiers and hashes are not rescanned as prose.
fn printable_text(bytes: Vec<u8>) -> Option<String> {
    let text = String::from_utf8(bytes).ok()?;
    let total = text.chars().count();
    let wordy = text
        .chars()
        .filter(|c| c.is_alphabetic() || *c == ' ')
        .count();
    (total >= 8 && wordy * 10 >= total * 8 && text.contains(' ')).then_some(text)
}

#[derive(Default)]
struct Accumulator {
    /// Every weight seen per category, one entry per distinct rule.
    categories: Vec<(Category, Vec<(usize, f64)>)>,
    findings: Vec<Finding>,
}

/// Rule index for evidence that is not a table rule (decoded payloads, floods, tags).
const SIGNAL: usize = usize::MAX;

impl Accumulator {
    /// Adds rule `i`'s evidence, with the span of its first match in `view` (returned).
    fn add_rule(&mut self, d: &Detector, i: usize, view: &str) -> Option<(usize, usize)> {
        let r = &RULES[i];
        // The set already compiled this pattern, so building it alone cannot fail; if it ever
        // did, the finding is kept without a span rather than lost.
        let span = d
            .regexes
            .get(i)
            .and_then(|cell| {
                cell.get_or_init(|| Regex::new(&dfa_pattern(r.pattern)).ok())
                    .as_ref()
            })
            .and_then(|re| re.find(view))
            .map(|m| (m.start(), m.end()));
        self.add(r.category, i, r.weight, span);
        span
    }

    fn add(&mut self, category: Category, rule: usize, weight: f64, span: Option<(usize, usize)>) {
        let pos = match self.categories.iter().position(|(c, _)| *c == category) {
            Some(p) => p,
            None => {
                self.categories.push((category, Vec::new()));
                self.categories.len() - 1
            }
        };
        let entry = &mut self.categories[pos].1;
        // The same rule seen twice (both views, or a decoded copy) is one piece of evidence.
        match entry.iter_mut().find(|(r, _)| *r == rule && rule != SIGNAL) {
            Some((_, w)) => *w = w.max(weight),
            None => entry.push((rule, weight)),
        }
        if let Some((start, end)) = span {
            self.findings.push(Finding {
                category,
                rule,
                start,
                end,
            });
        }
    }

    /// Families are independent evidence; inside one family each further rule counts half as
    /// much as the one before, so several weak phrasings of one technique add up without one
    /// verbose attack counting as many.
    fn finish(self) -> super::RiskReport {
        let mut families: Vec<(Category, f64)> = self
            .categories
            .into_iter()
            .map(|(c, mut ws)| {
                ws.sort_by(|a, b| b.1.total_cmp(&a.1));
                let mut keep = 1.0;
                let mut factor = 1.0;
                for (_, w) in ws {
                    keep *= 1.0 - w * factor;
                    factor *= 0.5;
                }
                (c, 1.0 - keep)
            })
            .collect();
        families.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let keep_going: f64 = families.iter().map(|(_, w)| 1.0 - w).product();
        let score = ((1.0 - keep_going) * 1000.0).round() / 1000.0;
        super::RiskReport {
            risk_score: score.clamp(0.0, 1.0),
            categories: families.into_iter().map(|(c, _)| c).collect(),
            findings: self.findings,
        }
    }
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
