//! The rules' own alphabet: a prompt rewritten with one byte for each kind of character the
//! rules cannot tell apart (two for a character they spell), and the rules rewritten to read it.
//!
//! Why: with Unicode classes (`\w`, `\s`, `.`) every class of every rule compiles to an
//! automaton that spells out UTF-8 for thousands of code point ranges: the 117 rules held
//! 16.1 MB in every process (plus an ASCII twin for English text), and the lazy DFA built its
//! states through those automata on each new text. Yet the rules distinguish only a handful of
//! kinds of non-ASCII character: a Japanese ideograph no rule spells is, to every rule, exactly a
//! "word character that is none of the spelled ones", like a Greek letter no rule spells.
//!
//! So the non-ASCII code points are partitioned by which of the rules' classes hold them:
//! - every character some rule spells literally (`ü`, `и`, `忽`, `🔓`, …) becomes two bytes: a
//!   lead byte and a trail byte numbering it, spelled characters that the same classes hold
//!   numbered side by side, so a class holding them is a few byte ranges, not hundreds of UTF-8
//!   sequences (written as themselves, every `\w` carried all of them: a larger set than the
//!   Unicode one);
//! - every other character becomes one byte naming its cell of the partition;
//! - cell and lead bytes are bytes UTF-8 never uses (`0xC0`, `0xC1`, `0xF5`–`0xFF`), trail bytes
//!   are `0x80`–`0xBF`, which nothing else in the rewritten text is: no rule can start a match
//!   on a trail byte, so no rule matches across the middle of a character;
//! - each rule's class becomes its ASCII part, the bytes of the cells inside it and the codes of
//!   the spelled characters inside it; literals are spelled in the codes; look-around (ASCII
//!   `\b`, `^`, `$`) is unchanged.
//!
//! One character is still one step of every class and repetition, so a rewritten rule matches
//! the rewritten text exactly where the rule matches the text (tests compare both sets on
//! generated and real prompts). ASCII text is its own rewriting and is not copied.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use regex_syntax::hir::{
    Capture, Class, ClassBytes, ClassBytesRange, ClassUnicode, Hir, HirKind, Look, Repetition,
};

/// Bytes that never occur in UTF-8: the cells' bytes, then the lead bytes of spelled characters.
const FREE_BYTES: [u8; 13] = [
    0xC0, 0xC1, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF,
];

/// Trail bytes: the spelled characters behind one lead byte.
const TRAILS: std::ops::RangeInclusive<u8> = 0x80..=0xBF;
const PER_LEAD: usize = 64;

/// Code points in the table's blocks, and how many blocks cover Unicode.
const BLOCK: usize = 256;
const BLOCKS: usize = 0x11_0000 / BLOCK;

/// Why the rules could not be rewritten. The detector then keeps scanning with Unicode classes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum AlphabetError {
    #[error(
        "the rules need {0} bytes for kinds of character and spelled characters; {max} exist",
        max = FREE_BYTES.len()
    )]
    TooManyCells(usize),
    #[error("a rule uses {0}, which has no meaning on the rewritten text")]
    Unsupported(&'static str),
}

/// The rewriting of text: what each non-ASCII character becomes.
pub(super) struct Alphabet {
    /// For each block of 256 code points, its row in `rows`: most blocks are one cell throughout,
    /// so identical rows are stored once. An entry up to `0xFF` is one byte, a larger one the two
    /// bytes of a spelled character (lead, trail).
    index: Vec<u16>,
    rows: Vec<[u16; BLOCK]>,
}

impl Alphabet {
    /// The alphabet the rules `hirs` (parsed with Unicode on) distinguish, and the rules
    /// rewritten to read text in it.
    pub(super) fn for_rules(hirs: &[Hir]) -> Result<(Alphabet, Vec<Hir>), AlphabetError> {
        let mut spelled = BTreeSet::new();
        let mut classes: Vec<Vec<(u32, u32)>> = Vec::new();
        for hir in hirs {
            collect(hir, &mut spelled, &mut classes)?;
        }
        classes.sort();
        classes.dedup();
        let membership = |cp: u32| -> Vec<bool> { classes.iter().map(|c| holds(c, cp)).collect() };

        // Cut the non-ASCII code points wherever a class or a spelled character starts or ends;
        // between two cuts every code point belongs to the same classes.
        let mut cuts: Vec<u32> = vec![0x80, 0x11_0000];
        for class in &classes {
            for &(lo, hi) in class {
                cuts.extend([lo, hi + 1]);
            }
        }
        for &c in &spelled {
            cuts.extend([u32::from(c), u32::from(c) + 1]);
        }
        cuts.sort_unstable();
        cuts.dedup();

        // Each span's cell: the set of classes holding it.
        let mut cells: HashMap<Vec<bool>, u8> = HashMap::new();
        let mut cell_reps: Vec<(u8, u32)> = Vec::new();
        let mut spans: Vec<(u32, u32, u16)> = Vec::new();
        for w in cuts.windows(2) {
            let (lo, end) = (w[0], w[1]);
            if end == lo + 1 && char::from_u32(lo).is_some_and(|c| spelled.contains(&c)) {
                continue;
            }
            let key = membership(lo);
            let next = cells.len();
            let byte = match cells.get(&key) {
                Some(&b) => b,
                None => {
                    let b = *FREE_BYTES
                        .get(next)
                        .ok_or(AlphabetError::TooManyCells(next + 1))?;
                    cells.insert(key, b);
                    cell_reps.push((b, lo));
                    b
                }
            };
            spans.push((lo, end, u16::from(byte)));
        }

        // Spelled characters numbered in order of the classes holding them, so that each class
        // holds runs of consecutive codes.
        let mut by_classes: Vec<(Vec<bool>, char)> = spelled
            .iter()
            .map(|&c| (membership(u32::from(c)), c))
            .collect();
        by_classes.sort();
        let leads = by_classes.len().div_ceil(PER_LEAD);
        if cells.len() + leads > FREE_BYTES.len() {
            return Err(AlphabetError::TooManyCells(cells.len() + leads));
        }
        let mut codes: HashMap<char, (u8, u8)> = HashMap::new();
        for (i, &(_, c)) in by_classes.iter().enumerate() {
            let lead = FREE_BYTES[cells.len() + i / PER_LEAD];
            let trail = TRAILS.start() + (i % PER_LEAD) as u8;
            codes.insert(c, (lead, trail));
            let cp = u32::from(c);
            spans.push((cp, cp + 1, u16::from_be_bytes([lead, trail])));
        }
        spans.sort_unstable();

        let mut index = vec![0u16; BLOCKS];
        let mut rows: Vec<[u16; BLOCK]> = Vec::new();
        let mut seen: HashMap<[u16; BLOCK], u16> = HashMap::new();
        let mut span = spans.iter().peekable();
        for (block, slot) in index.iter_mut().enumerate() {
            let mut row = [0u16; BLOCK];
            for (offset, entry) in row.iter_mut().enumerate() {
                let cp = (block * BLOCK + offset) as u32;
                if cp < 0x80 {
                    continue;
                }
                while span.next_if(|&&(_, end, _)| end <= cp).is_some() {}
                if let Some(&&(lo, _, code)) = span.peek()
                    && lo <= cp
                {
                    *entry = code;
                }
            }
            let next = rows.len() as u16;
            *slot = *seen.entry(row).or_insert_with(|| {
                rows.push(row);
                next
            });
        }

        let rewrite = Rewrite {
            codes: &codes,
            cell_reps: &cell_reps,
        };
        let rules = hirs
            .iter()
            .map(|h| rewrite.hir(h))
            .collect::<Result<_, _>>()?;
        Ok((Alphabet { index, rows }, rules))
    }

    /// What `c` (not ASCII) becomes: one byte, or two packed big-endian.
    #[inline]
    fn code(&self, c: char) -> u16 {
        let cp = c as usize;
        let row = self.index.get(cp / BLOCK).copied().unwrap_or(0);
        self.rows.get(usize::from(row)).map_or(0, |r| r[cp % BLOCK])
    }

    /// `text` in the rules' alphabet. ASCII text is returned as it is.
    pub(super) fn rewrite<'a>(&self, text: &'a str) -> Cow<'a, [u8]> {
        let bytes = text.as_bytes();
        let first = super::ascii::ascii(bytes);
        if first == bytes.len() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len());
        out.extend_from_slice(&bytes[..first]);
        let mut rest = &text[first..];
        while let Some(c) = rest.chars().next() {
            match self.code(c) {
                code @ 0..=0xFF => out.push(code as u8),
                code => out.extend_from_slice(&code.to_be_bytes()),
            }
            rest = &rest[c.len_utf8()..];
            let run = super::ascii::ascii(rest.as_bytes());
            out.extend_from_slice(&rest.as_bytes()[..run]);
            rest = &rest[run..];
        }
        Cow::Owned(out)
    }
}

/// Whether the sorted, disjoint ranges `class` hold `cp`.
fn holds(class: &[(u32, u32)], cp: u32) -> bool {
    let i = class.partition_point(|&(_, hi)| hi < cp);
    class.get(i).is_some_and(|&(lo, _)| lo <= cp)
}

/// Gathers the non-ASCII characters `hir` spells and the non-ASCII part of each of its classes.
fn collect(
    hir: &Hir,
    spelled: &mut BTreeSet<char>,
    classes: &mut Vec<Vec<(u32, u32)>>,
) -> Result<(), AlphabetError> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(lit) => {
            let text = std::str::from_utf8(&lit.0)
                .map_err(|_| AlphabetError::Unsupported("a literal that is not UTF-8"))?;
            spelled.extend(text.chars().filter(|c| !c.is_ascii()));
        }
        HirKind::Class(Class::Unicode(class)) => {
            let wide: Vec<(u32, u32)> = class
                .ranges()
                .iter()
                .filter(|r| u32::from(r.end()) >= 0x80)
                .map(|r| (u32::from(r.start()).max(0x80), u32::from(r.end())))
                .collect();
            if !wide.is_empty() {
                classes.push(wide);
            }
        }
        HirKind::Class(Class::Bytes(class)) => {
            if class.ranges().iter().any(|r| r.end() >= 0x80) {
                return Err(AlphabetError::Unsupported("a class of non-ASCII bytes"));
            }
        }
        HirKind::Repetition(rep) => collect(&rep.sub, spelled, classes)?,
        HirKind::Capture(cap) => collect(&cap.sub, spelled, classes)?,
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            for sub in subs {
                collect(sub, spelled, classes)?;
            }
        }
    }
    Ok(())
}

/// Rewrites rules to read text in the alphabet.
struct Rewrite<'a> {
    /// Each spelled character's two bytes.
    codes: &'a HashMap<char, (u8, u8)>,
    /// Each cell's byte and one code point in it.
    cell_reps: &'a [(u8, u32)],
}

impl Rewrite<'_> {
    fn hir(&self, hir: &Hir) -> Result<Hir, AlphabetError> {
        Ok(match hir.kind() {
            HirKind::Empty => hir.clone(),
            HirKind::Literal(lit) => {
                let text = std::str::from_utf8(&lit.0)
                    .map_err(|_| AlphabetError::Unsupported("a literal that is not UTF-8"))?;
                let mut bytes = Vec::with_capacity(lit.0.len());
                for c in text.chars() {
                    match self.codes.get(&c) {
                        Some(&(lead, trail)) => bytes.extend([lead, trail]),
                        None if c.is_ascii() => bytes.push(c as u8),
                        // `collect` saw every character of every literal.
                        None => return Err(AlphabetError::Unsupported("an unnumbered character")),
                    }
                }
                Hir::literal(bytes)
            }
            HirKind::Look(look) => {
                if !matches!(
                    look,
                    Look::Start
                        | Look::End
                        | Look::StartLF
                        | Look::EndLF
                        | Look::StartCRLF
                        | Look::EndCRLF
                        | Look::WordAscii
                        | Look::WordAsciiNegate
                        | Look::WordStartAscii
                        | Look::WordEndAscii
                        | Look::WordStartHalfAscii
                        | Look::WordEndHalfAscii
                ) {
                    // A Unicode word boundary reads the characters the rewriting replaced.
                    return Err(AlphabetError::Unsupported("a Unicode word boundary"));
                }
                hir.clone()
            }
            HirKind::Class(Class::Bytes(_)) => hir.clone(),
            HirKind::Class(Class::Unicode(class)) => self.class(class),
            HirKind::Repetition(rep) => Hir::repetition(Repetition {
                min: rep.min,
                max: rep.max,
                greedy: rep.greedy,
                sub: Box::new(self.hir(&rep.sub)?),
            }),
            HirKind::Capture(cap) => Hir::capture(Capture {
                index: cap.index,
                name: cap.name.clone(),
                sub: Box::new(self.hir(&cap.sub)?),
            }),
            HirKind::Concat(subs) => {
                Hir::concat(subs.iter().map(|s| self.hir(s)).collect::<Result<_, _>>()?)
            }
            HirKind::Alternation(subs) => {
                Hir::alternation(subs.iter().map(|s| self.hir(s)).collect::<Result<_, _>>()?)
            }
        })
    }

    /// A class: its ASCII part and the cells inside it as bytes, the spelled characters inside
    /// it as a trail-byte class behind each lead. Every cell lies wholly inside or outside each
    /// class (the cells were cut by these classes), so testing one code point per cell is exact.
    fn class(&self, class: &ClassUnicode) -> Hir {
        let ranges: Vec<(u32, u32)> = class
            .ranges()
            .iter()
            .map(|r| (u32::from(r.start()), u32::from(r.end())))
            .collect();
        let mut bytes: Vec<ClassBytesRange> = ranges
            .iter()
            .filter(|&&(lo, _)| lo < 0x80)
            .map(|&(lo, hi)| ClassBytesRange::new(lo as u8, hi.min(0x7F) as u8))
            .collect();
        bytes.extend(
            self.cell_reps
                .iter()
                .filter(|&&(_, cp)| holds(&ranges, cp))
                .map(|&(b, _)| ClassBytesRange::new(b, b)),
        );
        let mut trails: BTreeMap<u8, Vec<ClassBytesRange>> = BTreeMap::new();
        for (&c, &(lead, trail)) in self.codes {
            if holds(&ranges, u32::from(c)) {
                trails
                    .entry(lead)
                    .or_default()
                    .push(ClassBytesRange::new(trail, trail));
            }
        }
        let mut parts = Vec::new();
        if !bytes.is_empty() {
            parts.push(Hir::class(Class::Bytes(ClassBytes::new(bytes))));
        }
        for (lead, ranges) in trails {
            parts.push(Hir::concat(vec![
                Hir::literal([lead]),
                Hir::class(Class::Bytes(ClassBytes::new(ranges))),
            ]));
        }
        // An empty alternation is the class that matches nothing, as the empty class was.
        Hir::alternation(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_automata::util::syntax;
    use regex_automata::{Input, MatchKind, PatternSet, meta};

    fn parse(patterns: &[&str]) -> Vec<Hir> {
        syntax::parse_many_with(patterns, &syntax::Config::new().unicode(true).utf8(true))
            .expect("patterns parse")
    }

    fn set(hirs: &[Hir], utf8: bool) -> meta::Regex {
        meta::Builder::new()
            .configure(
                meta::Config::new()
                    .match_kind(MatchKind::All)
                    .utf8_empty(utf8),
            )
            .build_many_from_hir(hirs)
            .expect("set builds")
    }

    fn which(set: &meta::Regex, hay: &[u8]) -> Vec<usize> {
        let mut found = PatternSet::new(set.pattern_len());
        set.which_overlapping_matches(&Input::new(hay), &mut found);
        found.iter().map(|p| p.as_usize()).collect()
    }

    #[test]
    fn characters_no_rule_spells_collapse_to_one_byte_each() {
        let (alphabet, _) = Alphabet::for_rules(&parse(&[r"\w+ü", r"\s+", r"\d"])).unwrap();
        let text = "a日本ü😀 ٣";
        let out = alphabet.rewrite(text);
        // `a`, two ideographs, `ü` (numbered: two bytes), an emoji, a space, an Arabic-Indic digit.
        assert_eq!(out.len(), 1 + 1 + 1 + 2 + 1 + 1 + 1);
        assert!(
            FREE_BYTES.contains(&out[3]) && TRAILS.contains(&out[4]),
            "ü is numbered"
        );
        assert_eq!(out[1], out[2], "two ideographs are the same cell");
        assert_ne!(out[1], out[5], "a letter and an emoji are not");
        assert_ne!(out[1], out[7], "nor a letter and a digit");
        assert!(matches!(alphabet.rewrite("plain ascii"), Cow::Borrowed(_)));
    }

    #[test]
    fn rewritten_rules_match_exactly_where_the_rules_do() {
        let patterns = [
            r"(?-u:\b)ignore(?-u:\b)\W+(?:\w+\W+){0,2}?rules",
            r"über\w{0,3}\s+日本",
            r"(?m)^\s*ai\s*:\s*\S[^\n]*\n",
            r"x\d{2}",
            r"[^a-z\s]{3}",
            r"a.{2}b",
            r"忽略.?指令",
            r"(?:🔓|🔒)\s*jailbreak",
        ];
        let hirs = parse(&patterns);
        let (alphabet, rewritten) = Alphabet::for_rules(&hirs).unwrap();
        let (unicode, reduced) = (set(&hirs, true), set(&rewritten, false));
        let texts = [
            "please ignore, all the rules",
            "please ignore 日本 rules",
            "ignoreé the rules",
            "überall 日本",
            "übeé日 日本",
            "ai: 😀\nnext",
            "x٣٣ and x12",
            "日本語 and 😀😀😀",
            "aéé b and a日本b",
            "忽略😀指令",
            "🔒 jailbreak",
            "ΑΒΓ ü",
        ];
        for text in texts {
            assert_eq!(
                which(&unicode, text.as_bytes()),
                which(&reduced, &alphabet.rewrite(text)),
                "{text}"
            );
        }
    }

    #[test]
    fn more_kinds_than_cell_bytes_is_an_error_not_a_wrong_answer() {
        let patterns: Vec<String> = (0..14)
            .map(|i| format!("[\\u{{{:x}}}-\\u{{{:x}}}]", 0x400 + 2 * i, 0x401 + 2 * i))
            .collect();
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        assert!(matches!(
            Alphabet::for_rules(&parse(&refs)),
            Err(AlphabetError::TooManyCells(_))
        ));
        assert!(matches!(
            Alphabet::for_rules(&parse(&[r"\bword\b"])),
            Err(AlphabetError::Unsupported(_))
        ));
    }
}
