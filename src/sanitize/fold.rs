//! The folded copy only the detector reads: lower-case, look-alike letters mapped to the ASCII
//! letters they imitate, leetspeak undone inside words, letter-spacing and inner punctuation
//! joined (`s.y.s.t.e.m` → `system`). Split from `normalize` (what is forwarded) because the two
//! have different jobs: the forwarded text keeps the user's wording, this copy exists only to be
//! matched.

/// Maps a look-alike letter (Cyrillic, Greek, Latin small capitals, …) to the ASCII letter it
/// imitates. NFKC already folds full-width and mathematical alphanumerics.
fn confusable(c: char) -> Option<char> {
    Some(match c {
        'а' | 'ɑ' | 'α' => 'a',
        'в' | 'ʙ' | 'β' => 'b',
        'с' | 'ϲ' | 'ᴄ' => 'c',
        'ԁ' | 'ɗ' => 'd',
        'е' | 'ё' | 'є' | 'ε' | 'ᴇ' => 'e',
        'ғ' => 'f',
        'ɡ' | 'ց' => 'g',
        'һ' | 'н' | 'ʜ' | 'η' => 'h',
        'і' | 'ї' | 'ι' | 'ɪ' | 'ı' => 'i',
        'ј' | 'ϳ' => 'j',
        'к' | 'κ' | 'ᴋ' => 'k',
        'ӏ' | 'ʟ' => 'l',
        'м' | 'ᴍ' => 'm',
        'п' | 'ո' | 'ɴ' => 'n',
        'о' | 'ο' | 'σ' | 'օ' | 'ᴏ' => 'o',
        'р' | 'ρ' | 'ᴘ' => 'p',
        'ԛ' => 'q',
        'г' | 'ʀ' => 'r',
        'ѕ' | 'ꜱ' => 's',
        'т' | 'τ' | 'ᴛ' => 't',
        'υ' | 'ս' | 'ᴜ' => 'u',
        'ν' | 'ᴠ' => 'v',
        'ѡ' | 'ω' | 'ᴡ' => 'w',
        'х' | 'χ' => 'x',
        'у' | 'ү' | 'γ' | 'ʏ' => 'y',
        'ᴢ' => 'z',
        _ => return None,
    })
}

const fn leet(c: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' | '!' | '|' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        '8' => 'b',
        _ => return None,
    })
}

/// Typographic quotes and apostrophes read as their ASCII forms in every rule.
fn ascii_quote(c: char) -> char {
    match c {
        '\u{2018}' | '\u{2019}' | '\u{201B}' | '\u{2032}' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{201F}' | '\u{2033}' => '"',
        _ => c,
    }
}

/// Look-alike letters the plain view maps already: those of the scripts no rule is written in
/// (IPA and small capitals, dotless `ı`, Greek, Armenian). The rules spell Russian words, so
/// Cyrillic letters stay as written there and only the folded view maps them. A unit test holds
/// the rule table to this: no rule may spell a letter this maps.
///
/// Mapping them here costs nothing in detection (no rule could have matched the letter itself)
/// and saves most of the folding work: a Turkish line with an `ı`, say, is otherwise folded and
/// scanned a second time for nothing.
pub(super) fn plain_look_alike(c: char) -> Option<char> {
    if ('\u{0400}'..='\u{052F}').contains(&c) {
        return None;
    }
    confusable(c)
}

/// The detector's plain view: lower-case with ASCII quotes, letters otherwise as written (rules
/// for Cyrillic or Chinese need the real letters) except the look-alikes of
/// [`plain_look_alike`].
pub fn lower(normalized: &str) -> String {
    lower_marked(normalized).0
}

/// [`lower`], and the byte offsets in the lowered text where it mapped a look-alike letter (a
/// rule that matches across one is an obfuscated match, as if only the folded view had shown
/// it). Usually empty.
pub fn lower_marked(normalized: &str) -> (String, Vec<usize>) {
    let mut marks = Vec::new();
    if normalized.is_ascii() {
        return (normalized.to_ascii_lowercase(), marks);
    }
    // ASCII bytes are lowered as bytes; only the other characters are decoded.
    let mut out = String::with_capacity(normalized.len());
    let mut rest = normalized;
    while !rest.is_empty() {
        let ascii = super::ascii::ascii(rest.as_bytes());
        let (run, tail) = rest.split_at(ascii);
        // Lowered where it lands: no copy of the run of its own.
        let at = out.len();
        out.push_str(run);
        out[at..].make_ascii_lowercase();
        let mut chars = tail.chars();
        if let Some(c) = chars.next() {
            for l in c.to_lowercase() {
                match plain_look_alike(l) {
                    Some(mapped) => {
                        marks.push(out.len());
                        out.push(mapped);
                    }
                    None => out.push(ascii_quote(l)),
                }
            }
        }
        rest = chars.as_str();
    }
    (out, marks)
}

/// The detector's view: lower-case, look-alikes mapped to ASCII, leetspeak undone inside words
/// that are mostly letters, diacritics kept (rules for other languages need them), and spaced
/// letters ("i g n o r e") joined. Input is expected to be [`normalize`]d already.
pub fn fold(normalized: &str) -> String {
    let lowered = lower(normalized);
    fold_changes(&lowered).map_or(lowered, |f| f.text)
}

/// [`fold`] of text that is already [`lower`]ed (lower-casing is the first step of folding, so
/// the detector, which needs both views, lowers once).
///
/// No step of folding looks across a line break (separators, tokens and letter-spacing all stop
/// at `\n`, and a line's edge reads exactly like the text's edge), so each line is folded on its
/// own and the lines nothing would change are copied: a long prompt with one `pieces!!` or one
/// Turkish `ı` pays for that line, not for ten thousand characters.
pub fn fold_lowered(lowered: &str) -> String {
    fold_changes(lowered).map_or_else(|| lowered.to_owned(), |f| f.text)
}

/// A folded view that differs from the lowered one, and where.
pub struct Folded {
    pub text: String,
    /// Byte ranges of `text` (whole lines, without their line break) that folding changed, in
    /// order. Everything outside them is the lowered text as it was.
    pub changed: Vec<std::ops::Range<usize>>,
}

/// [`fold_lowered`], or `None` when folding changes nothing (the usual case). Lines are checked
/// one by one and only the lines [`needs_fold`] picks are folded; the text is copied only once
/// one of them actually changes.
pub fn fold_changes(lowered: &str) -> Option<Folded> {
    let mut folded: Option<Folded> = None;
    // Bytes of `lowered` already copied into the folded text.
    let mut copied = 0;
    let mut line_start = 0;
    for line in lowered.split('\n') {
        if needs_fold(line) {
            let f = fold_line(line);
            if f != line {
                let out = folded.get_or_insert_with(|| Folded {
                    text: String::with_capacity(lowered.len()),
                    changed: Vec::new(),
                });
                out.text.push_str(&lowered[copied..line_start]);
                let start = out.text.len();
                out.text.push_str(&f);
                out.changed.push(start..out.text.len());
                copied = line_start + line.len();
            }
        }
        line_start += line.len() + 1;
    }
    if let Some(out) = folded.as_mut() {
        out.text.push_str(&lowered[copied..]);
    }
    folded
}

/// The folding steps over one line (or any text: they are exact on whole texts too).
fn fold_line(lowered: &str) -> String {
    let mut chars: Vec<char> = lowered
        .chars()
        .map(|c| confusable(c).unwrap_or(c))
        .collect();
    drop_inner_punctuation(&mut chars);
    undo_leet(&mut chars);
    join_spaced_letters(&chars)
}

/// Whether [`fold_lowered`] could change this [`lower`]ed text: a look-alike letter, two or more
/// separators between letters, a token whose leetspeak [`undo_leet`] would map, or four lone
/// letters one character apart. Most prompts have none of them, in any script, and then the
/// folded view is the lowered one: no copy, and the detector scans once instead of twice.
///
/// May say yes when folding changes nothing (then the fold merely costs time); must never say no
/// when it would change something. A property test holds it to that.
pub fn needs_fold(lowered: &str) -> bool {
    let bytes = lowered.as_bytes();
    // The class of the character at byte `at` and its length. ASCII, nearly every byte of
    // nearly every prompt, is one table lookup; other characters are decoded. `None` at the end,
    // and for a look-alike (which alone means folding has work to do).
    let class_at = |at: usize| -> Option<(u8, usize)> {
        let &b = bytes.get(at)?;
        if b.is_ascii() {
            return Some((CLASS[usize::from(b)], 1));
        }
        let c = lowered.get(at..)?.chars().next()?;
        if is_cjk_letter(c) {
            return Some((ALPHA | ALNUM, c.len_utf8()));
        }
        let mut k = 0;
        if confusable(c).is_some() {
            k |= LOOK_ALIKE;
        }
        if c.is_alphabetic() {
            k |= ALPHA | ALNUM;
        } else if c.is_alphanumeric() {
            k |= ALNUM;
        }
        if c.is_whitespace() {
            k |= SPACE;
        }
        Some((k, c.len_utf8()))
    };
    let mut prev = SPACE;
    // Separators seen in a row right after a letter (0 when the run did not follow one).
    let mut sep_run = 0usize;
    // Lone letters (no letter or digit on either side) exactly one character apart.
    let mut lone_run = 0usize;
    let mut last_lone: Option<usize> = None;
    // The current token (whitespace-separated), for the leetspeak check.
    let mut token_start = 0usize;
    let mut token_letters = 0usize;
    let mut token_leet = false;
    let mut token: Vec<char> = Vec::new();
    let mut at = 0usize;
    let mut n = 0usize;
    while let Some((k, len)) = class_at(at) {
        if k & LOOK_ALIKE != 0 {
            return true;
        }
        // A word of two or more ASCII letters (most of any prompt) changes nothing below but
        // the counts: no letter in it is lone, and only its first ends a separator run.
        let word = if bytes[at].is_ascii_alphabetic() {
            super::ascii::letters(&bytes[at..])
        } else {
            0
        };
        if word >= 2 {
            if sep_run >= 2 {
                return true;
            }
            sep_run = 0;
            token_letters += word;
            prev = ALPHA | ALNUM;
            at += word;
            n += word;
            continue;
        }
        if k & SEP != 0 {
            if sep_run > 0 || prev & ALPHA != 0 {
                sep_run += 1;
            }
        } else {
            if sep_run >= 2 && k & ALPHA != 0 {
                return true;
            }
            sep_run = 0;
        }
        if k & ALPHA != 0
            && prev & ALNUM == 0
            && class_at(at + len).is_none_or(|(next, _)| next & ALNUM == 0)
        {
            lone_run = match last_lone {
                Some(l) if n == l + 2 => lone_run + 1,
                _ => 1,
            };
            last_lone = Some(n);
            if lone_run >= 4 {
                return true;
            }
        }
        if k & SPACE != 0 {
            if token_letters >= 2
                && token_leet
                && leet_changes(&lowered[token_start..at], &mut token)
            {
                return true;
            }
            token_start = at + len;
            token_letters = 0;
            token_leet = false;
        } else {
            token_letters += usize::from(k & ALPHA != 0);
            token_leet |= k & LEET != 0;
        }
        prev = k;
        at += len;
        n += 1;
    }
    token_letters >= 2 && token_leet && leet_changes(&lowered[token_start..], &mut token)
}

/// Kana, the common CJK ideographs and Hangul syllables: letters, none of them a look-alike or
/// whitespace. Answered by two comparisons, where `char::is_alphabetic` searches a table: a
/// Japanese or Chinese paragraph is thousands of them, and the checks that read every character
/// (folding's and the flood check's) ask about each.
pub(super) fn is_cjk_letter(c: char) -> bool {
    matches!(c, '\u{3041}'..='\u{3096}' | '\u{30A1}'..='\u{30FA}' | '\u{4E00}'..='\u{9FEF}' | '\u{AC00}'..='\u{D7A3}')
}

// Character classes for [`needs_fold`].
const ALPHA: u8 = 1;
const ALNUM: u8 = 2;
const LEET: u8 = 4;
const SPACE: u8 = 8;
const SEP: u8 = 16;
const LOOK_ALIKE: u8 = 32;
/// The classes of the ASCII characters, from the same predicates the folding steps use.
const CLASS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        let c = i as u8 as char;
        let mut k = 0;
        if c.is_ascii_alphabetic() {
            k |= ALPHA;
        }
        if c.is_ascii_alphanumeric() {
            k |= ALNUM;
        }
        if leet(c).is_some() {
            k |= LEET;
        }
        // `char::is_whitespace` on ASCII: the ASCII whitespace and the vertical tab.
        if c.is_ascii_whitespace() || c == '\x0b' {
            k |= SPACE;
        }
        if is_inner_separator(c) {
            k |= SEP;
        }
        t[i] = k;
        i += 1;
    }
    t
};

/// Whether [`undo_leet`] maps anything in this token. `buf` is reused between tokens.
fn leet_changes(token: &str, buf: &mut Vec<char>) -> bool {
    buf.clear();
    buf.extend(token.chars());
    undo_leet_token(buf).any(|(c, mapped)| c != mapped)
}

/// Separator characters an attacker pushes into a word (`se///cret`, `pass**word`).
const fn is_inner_separator(c: char) -> bool {
    matches!(
        c,
        '/' | '\\' | '|' | '*' | '_' | '.' | '-' | '~' | '+' | '^'
    )
}

/// Removes runs of two or more separators between two letters: `se///cret` reads `secret`.
/// A single separator is ordinary writing (`input/output`, `player.health`) and stays. In place:
/// the text only shrinks, so what is written never overtakes what is still to be read.
fn drop_inner_punctuation(chars: &mut Vec<char>) {
    let mut w = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_inner_separator(c) && w > 0 && chars[w - 1].is_alphabetic() {
            let mut j = i;
            while j < chars.len() && is_inner_separator(chars[j]) {
                j += 1;
            }
            if j - i >= 2 && chars.get(j).is_some_and(|n| n.is_alphabetic()) {
                i = j;
                continue;
            }
            chars.copy_within(i..j, w);
            w += j - i;
            i = j;
            continue;
        }
        chars[w] = c;
        w += 1;
        i += 1;
    }
    chars.truncate(w);
}

/// Replaces digits and symbols used as letters, but only inside a token that also holds at least
/// two real letters, so `v2`, `3d`, `0.5` and `$100` are left alone. In place: one character
/// for one.
fn undo_leet(chars: &mut [char]) {
    let mut mapped = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let mut has_leet = false;
        while i < chars.len() && !chars[i].is_whitespace() {
            has_leet |= leet(chars[i]).is_some();
            i += 1;
        }
        if has_leet {
            mapped.clear();
            mapped.extend(undo_leet_token(&chars[start..i]).map(|(_, m)| m));
            chars[start..i].copy_from_slice(&mapped);
        }
    }
}

/// One token's characters as written and as [`undo_leet`] reads them.
fn undo_leet_token(token: &[char]) -> impl Iterator<Item = (char, char)> + '_ {
    let letters = token.iter().filter(|c| c.is_alphabetic()).count();
    let leets = token.iter().filter(|&&c| leet(c).is_some()).count();
    let digits_only_edge = token.first().is_some_and(|c| c.is_ascii_digit())
        && token
            .iter()
            .all(|c| c.is_ascii_digit() || *c == '.' || *c == ',');
    // An ordinal (`5th`, `34th`, `1st`) is a number, not a word spelled with digits.
    let applies = letters >= 2
        && leets >= 1
        && leets <= letters * 2
        && !digits_only_edge
        && !is_ordinal(token);
    let letter_like = |c: char| c.is_alphabetic() || leet(c).is_some();
    // The run of leetspeak characters the current one belongs to ends here, and whether an
    // ASCII letter stands right before or after it. Each run is measured once, when it starts.
    let last_alnum = token.iter().rposition(|c| c.is_alphanumeric());
    let mut run_end = 0;
    let mut run_by_letter = false;
    token.iter().enumerate().map(move |(j, &c)| {
        if !applies {
            return (c, c);
        }
        if j >= run_end && leet(c).is_some() {
            run_end = j + token[j..]
                .iter()
                .take_while(|&&n| leet(n).is_some())
                .count();
            run_by_letter = (j > 0 && token[j - 1].is_ascii_alphabetic())
                || token.get(run_end).is_some_and(char::is_ascii_alphabetic);
        }
        // Only interior or trailing symbols/digits that sit between letters are mapped;
        // punctuation at the end of a word (`ignore!`) is kept.
        // Leetspeak spells ASCII words, so its run must touch an ASCII letter (`p455w0rd` does;
        // `2014` in a URL and `号!在` are not spelled words), and a symbol (`!`, `|`, `@`, `$`)
        // reads as a letter only with a letter or digit still to come (`pieces!!` is emphasis,
        // `h!dden` is not).
        let between = j > 0
            && j + 1 < token.len()
            && letter_like(token[j - 1])
            && letter_like(token[j + 1])
            && run_by_letter
            && (c.is_ascii_digit() || last_alnum.is_some_and(|l| l > j));
        // A digit starts a word when two letters follow it (`4ll`, `5ecret`; not `3d-printed`).
        let starts_word = j == 0
            && c.is_ascii_digit()
            && token.get(1).is_some_and(|n| n.is_alphabetic())
            && token.get(2).is_some_and(|n| n.is_alphabetic());
        let trailing = j > 0
            && j + 1 == token.len()
            && leets >= 2
            && c.is_ascii_digit()
            && token[j - 1].is_ascii_alphabetic();
        match leet(c) {
            Some(l) if between || starts_word || trailing => (c, l),
            _ => (c, c),
        }
    })
}

/// A number written as an ordinal (`1st`, `22nd`, `3rd`, `5th`), with any punctuation after it.
fn is_ordinal(token: &[char]) -> bool {
    let digits = token.iter().take_while(|c| c.is_ascii_digit()).count();
    let rest = &token[digits..];
    let letters = rest.iter().take_while(|c| c.is_alphabetic()).count();
    digits > 0
        && matches!(
            rest[..letters],
            ['s', 't'] | ['n', 'd'] | ['r', 'd'] | ['t', 'h']
        )
        && rest[letters..].iter().all(|c| !c.is_alphanumeric())
}

/// Joins runs of at least four single letters separated by single spaces or punctuation
/// (`i g n o r e`, `i.g.n.o.r.e`), the letter-spacing trick.
fn join_spaced_letters(chars: &[char]) -> String {
    let mut out = String::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let word_start = i == 0 || !chars[i - 1].is_alphanumeric();
        if word_start && chars[i].is_alphabetic() {
            // Measure the run letter, separator, letter, separator, … before copying anything.
            let mut count = 1;
            let mut j = i + 1;
            while j + 1 < chars.len()
                && matches!(chars[j], ' ' | '.' | '-' | '_' | '*')
                && chars[j + 1].is_alphabetic()
                && (j + 2 >= chars.len() || !chars[j + 2].is_alphanumeric())
            {
                count += 1;
                j += 2;
            }
            if count >= 4 {
                out.extend(chars[i..j].iter().step_by(2));
                i = j;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
#[path = "fold_tests.rs"]
mod tests;
