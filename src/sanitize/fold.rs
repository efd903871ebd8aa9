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

/// The detector's plain view: lower-case with ASCII quotes, letters otherwise as written (rules
/// for Cyrillic or Chinese need the real letters).
pub fn lower(normalized: &str) -> String {
    if normalized.is_ascii() {
        return normalized.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(normalized.len());
    for c in normalized.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.extend(c.to_lowercase().map(ascii_quote));
        }
    }
    out
}

/// The detector's view: lower-case, look-alikes mapped to ASCII, leetspeak undone inside words
/// that are mostly letters, diacritics kept (rules for other languages need them), and spaced
/// letters ("i g n o r e") joined. Input is expected to be [`normalize`]d already.
pub fn fold(normalized: &str) -> String {
    let lowered = lower(normalized);
    if needs_fold(&lowered) {
        fold_lowered(&lowered)
    } else {
        lowered
    }
}

/// [`fold`] of text that is already [`lower`]ed (lower-casing is the first step of folding, so
/// the detector, which needs both views, lowers once).
///
/// No step of folding looks across a line break (separators, tokens and letter-spacing all stop
/// at `\n`, and a line's edge reads exactly like the text's edge), so each line is folded on its
/// own and the lines nothing would change are copied: a long prompt with one `pieces!!` or one
/// Turkish `ı` pays for that line, not for ten thousand characters.
pub fn fold_lowered(lowered: &str) -> String {
    let mut out = String::with_capacity(lowered.len());
    for (i, line) in lowered.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if needs_fold(line) {
            out.push_str(&fold_line(line));
        } else {
            out.push_str(line);
        }
    }
    out
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
    let applies = letters >= 2 && leets >= 1 && leets <= letters * 2 && !digits_only_edge;
    let letter_like = |c: char| c.is_alphabetic() || leet(c).is_some();
    token.iter().enumerate().map(move |(j, &c)| {
        if !applies {
            return (c, c);
        }
        // Only interior or trailing symbols/digits that sit between letters are mapped;
        // punctuation at the end of a word (`ignore!`) is kept.
        let between =
            j > 0 && j + 1 < token.len() && letter_like(token[j - 1]) && letter_like(token[j + 1]);
        let starts_word =
            j == 0 && token.get(1).is_some_and(|n| n.is_alphabetic()) && c.is_ascii_digit();
        let trailing = j > 0
            && j + 1 == token.len()
            && leets >= 2
            && c.is_ascii_digit()
            && letter_like(token[j - 1]);
        match leet(c) {
            Some(l) if between || starts_word || trailing => (c, l),
            _ => (c, c),
        }
    })
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Characters every folding rule reacts to, in several scripts, so that short random strings
    /// hit separator runs, leetspeak, lone letters and look-alikes often.
    fn folding_text() -> impl Strategy<Value = String> {
        let alphabet = vec![
            'a', 'b', 'e', 'x', 'Q', 'é', 'ß', 'ж', 'а', 'ο', '漢', 'の', '🔥', '٣', '²', ' ',
            '\n', '.', '-', '/', '*', '_', '|', '~', '!', '@', '$', '0', '1', '3', '4', '5', '7',
            '8', '2', '9', ',', '\u{2019}',
        ];
        prop::collection::vec(prop::sample::select(alphabet), 0..40)
            .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// The shortcut is only sound if it never skips a fold that would change the text.
        #[test]
        fn folding_line_by_line_is_folding_the_whole_text(s in folding_text()) {
            let lowered = lower(&s);
            prop_assert_eq!(fold_lowered(&lowered), fold_line(&lowered));
        }

        #[test]
        fn needs_fold_never_misses_a_change(s in folding_text()) {
            let lowered = lower(&s);
            if !needs_fold(&lowered) {
                prop_assert_eq!(fold_line(&lowered), lowered);
            }
        }
    }

    #[test]
    fn the_ascii_class_table_matches_the_predicates_folding_uses() {
        for b in 0u8..128 {
            let c = char::from(b);
            let k = CLASS[usize::from(b)];
            assert_eq!(k & ALPHA != 0, c.is_alphabetic(), "{b:#x}");
            assert_eq!(k & ALNUM != 0, c.is_alphanumeric(), "{b:#x}");
            assert_eq!(k & SPACE != 0, c.is_whitespace(), "{b:#x}");
            assert_eq!(k & LEET != 0, leet(c).is_some(), "{b:#x}");
            assert_eq!(k & SEP != 0, is_inner_separator(c), "{b:#x}");
        }
    }

    #[test]
    fn the_shortcut_agrees_with_folding_on_the_cases_it_once_missed() {
        // Mixed separators between letters, and leetspeak that touches no letter.
        assert_eq!(fold("se/*cret"), "secret");
        assert_eq!(fold("ab-111-"), fold_lowered("ab-111-"));
        assert_eq!(fold("Привет мир"), fold_lowered("привет мир"));
        // Prose in any script without a disguise is folded to its lower-case form, untouched.
        for text in [
            "Vector3 and 60 fps...",
            "日本語のテキスト 🔥",
            "Größe über alles",
        ] {
            assert!(!needs_fold(&lower(text)), "{text}");
        }
    }

    #[test]
    fn fold_maps_look_alikes_leet_and_spacing() {
        assert_eq!(fold("Іgnоrе"), "ignore"); // Cyrillic І, о, е
        assert_eq!(fold("1gn0r3 pr3v10us"), "ignore previous");
        assert_eq!(fold("i g n o r e all"), "ignore all");
        assert_eq!(fold("s.y.s.t.e.m prompt"), "system prompt");
    }

    #[test]
    fn fold_leaves_ordinary_numbers_and_short_tokens_alone() {
        assert_eq!(
            fold("Use Vector3 in a 3D game at 60 fps, v2 costs $100"),
            "use vector3 in a 3d game at 60 fps, v2 costs $100"
        );
        assert_eq!(fold("a b c"), "a b c");
    }
}
