//! Token floods: a run where one short token repeats many times (`ö ö ö ö …`), or long stretches
//! of two or three symbols (`})})}}})…`): padding that pushes the system prompt out of a model's
//! attention. A set of regexes cannot count repetitions of "whatever token came before", so this
//! is its own pass.
//!
//! It reads every prompt in full, so it is one pass over bytes: ASCII, nearly every byte of
//! nearly every prompt, is classified by a table, and only other characters are decoded.

/// Twenty-four or more identical tokens of at most twelve characters in a row are a flood.
const MIN_REPEATS: usize = 24;
const MAX_TOKEN_CHARS: usize = 12;
/// A symbol flood is at least this many symbols, whitespace ignored.
const MIN_SYMBOLS: usize = 64;

/// What a character is to the flood checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Space,
    Alnum,
    Symbol,
}

/// [`Kind`] of each ASCII byte, the same answers `char::is_whitespace` and
/// `char::is_alphanumeric` give (a unit test holds it to them).
const ASCII_KIND: [Kind; 128] = {
    let mut t = [Kind::Symbol; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = if matches!(c, b' ' | b'\t'..=b'\r') {
            Kind::Space
        } else if c.is_ascii_alphanumeric() {
            Kind::Alnum
        } else {
            Kind::Symbol
        };
        b += 1;
    }
    t
};

fn kind(c: char) -> Kind {
    if super::fold::is_cjk_letter(c) {
        Kind::Alnum
    } else if c.is_whitespace() {
        Kind::Space
    } else if c.is_alphanumeric() {
        Kind::Alnum
    } else {
        Kind::Symbol
    }
}

/// The byte span of the first token flood in `text`, repeated tokens taking precedence over
/// symbol runs (a repeated-token flood anywhere is reported even after a symbol flood).
pub(super) fn token_flood(text: &str) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut tokens = Repeats::default();
    let mut symbols = Symbols::default();
    let mut symbol_flood = None;
    let mut token_start: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphanumeric() {
            // A run of ASCII letters and digits (most of a prompt): inside a token, and a
            // symbol run is broken once whatever its length.
            let run = super::ascii::alphanumerics(&bytes[i..]);
            token_start.get_or_insert(i);
            if symbol_flood.is_none() {
                symbols.char(i, char::from(b), Kind::Alnum);
            }
            i += run;
            continue;
        }
        let (c, width, k) = if b.is_ascii() {
            (char::from(b), 1, ASCII_KIND[usize::from(b)])
        } else {
            let c = text.get(i..).and_then(|s| s.chars().next()).unwrap_or(' ');
            (c, c.len_utf8(), kind(c))
        };
        if k == Kind::Space {
            if let Some(start) = token_start.take()
                && let Some(span) = tokens.token(text, start, i)
            {
                return Some(span);
            }
        } else if token_start.is_none() {
            token_start = Some(i);
        }
        if symbol_flood.is_none() {
            symbol_flood = symbols.char(i, c, k);
        }
        i += width;
    }
    if let Some(start) = token_start
        && let Some(span) = tokens.token(text, start, bytes.len())
    {
        return Some(span);
    }
    symbol_flood
}

/// The repeated-token count: the last token and how many times it has come in a row.
#[derive(Default)]
struct Repeats {
    prev: Option<(usize, usize)>,
    run: usize,
    run_start: usize,
}

impl Repeats {
    /// The token at `text[start..end]`; the flood's span once it is long enough.
    fn token(&mut self, text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
        let bytes = text.as_bytes();
        let tok = &bytes[start..end];
        let same = self.prev.is_some_and(|(s, e)| bytes.get(s..e) == Some(tok));
        // Characters, not bytes: continuation bytes are not counted.
        let short = || tok.iter().filter(|&&b| (b & 0xC0) != 0x80).count() <= MAX_TOKEN_CHARS;
        if same && short() {
            self.run += 1;
            if self.run >= MIN_REPEATS {
                return Some((self.run_start, end));
            }
        } else {
            self.prev = Some((start, end));
            self.run = 1;
            self.run_start = start;
        }
        None
    }
}

/// The symbol-run count. A run of one symbol is a separator line such as "-----" and is left
/// alone, and so is a separator with a little decoration ("// -----"): a flood alternates
/// between its symbols.
#[derive(Default)]
struct Symbols {
    seen: [(char, usize); 3],
    distinct: usize,
    len: usize,
    start: usize,
}

impl Symbols {
    fn char(&mut self, at: usize, c: char, k: Kind) -> Option<(usize, usize)> {
        match k {
            Kind::Space => return None,
            Kind::Alnum => {
                self.distinct = 0;
                self.len = 0;
                return None;
            }
            Kind::Symbol => {}
        }
        if self.len == 0 {
            self.start = at;
        }
        match self.seen[..self.distinct].iter_mut().find(|(s, _)| *s == c) {
            Some((_, n)) => *n += 1,
            None if self.distinct < 3 => {
                self.seen[self.distinct] = (c, 1);
                self.distinct += 1;
            }
            None => {
                // A fourth symbol: start a new run from this one.
                self.seen[0] = (c, 1);
                self.distinct = 1;
                self.len = 0;
                self.start = at;
            }
        }
        self.len += 1;
        if self.len >= MIN_SYMBOLS && self.distinct >= 2 {
            let dominant = self.seen[..self.distinct]
                .iter()
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0);
            if dominant * 4 <= self.len * 3 {
                return Some((self.start, at));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The flood checks as first written, over decoded characters: the byte pass must agree
    /// with them on every input.
    fn reference(text: &str) -> Option<(usize, usize)> {
        let mut prev: Option<&str> = None;
        let (mut run, mut run_start) = (0usize, 0usize);
        for tok in text.split(char::is_whitespace).filter(|t| !t.is_empty()) {
            let at = tok.as_ptr() as usize - text.as_ptr() as usize;
            if Some(tok) == prev && tok.chars().count() <= MAX_TOKEN_CHARS {
                run += 1;
                if run >= MIN_REPEATS {
                    return Some((run_start, at + tok.len()));
                }
            } else {
                prev = Some(tok);
                run = 1;
                run_start = at;
            }
        }
        let mut s = Symbols::default();
        text.char_indices()
            .find_map(|(at, c)| s.char(at, c, kind(c)))
    }

    fn flood_text() -> impl Strategy<Value = String> {
        let pieces = vec![
            "ö ",
            "}",
            ")",
            "]",
            "-",
            "ab ",
            "ab",
            " ",
            "\n",
            "\u{3000}",
            "漢",
            "🔥 ",
            "x",
            "1",
            "é",
            "\u{2028}",
            "!",
            "//",
            "ababababababab ",
        ];
        prop::collection::vec(prop::sample::select(pieces), 0..200).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        #[test]
        fn the_byte_pass_is_the_character_definition(s in flood_text()) {
            prop_assert_eq!(token_flood(&s), reference(&s));
        }

        #[test]
        fn any_text_agrees_too(s in any::<String>()) {
            prop_assert_eq!(token_flood(&s), reference(&s));
        }
    }

    #[test]
    fn the_ascii_table_is_the_character_predicates() {
        for b in 0u8..128 {
            let c = char::from(b);
            assert!(ASCII_KIND[usize::from(b)] == kind(c), "{b:#x}");
        }
    }

    #[test]
    fn floods_and_their_spans() {
        let flood = "ö ".repeat(30);
        // The 24th "ö" (3 bytes with its space) ends the span.
        assert_eq!(token_flood(&flood), Some((0, 23 * "ö ".len() + "ö".len())));
        assert!(token_flood(&"})".repeat(50)).is_some());
        assert_eq!(token_flood(&"-".repeat(200)), None);
        assert_eq!(token_flood("a normal sentence, nothing repeated."), None);
    }
}
