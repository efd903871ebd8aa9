//! Properties of the sanitizer that must hold for every input (proptest).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

use proptest::prelude::*;
use spark_gateway::sanitize::{Policy, is_stripped, normalize, sanitize};
use unicode_normalization::UnicodeNormalization;

/// Characters that exercise every branch: invisibles, bidi controls, tags, variation selectors,
/// combining marks, compatibility forms, look-alikes, whitespace of all kinds, and the markers
/// of code comments and literals beside multi-byte characters.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        3 => prop::sample::select(vec![
            '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}', '\u{202E}',
            '\u{2066}', '\u{2069}', '\u{E0041}', '\u{E007F}', '\u{FE0F}', '\u{E0100}', '\u{0301}',
            '\u{0308}', '\u{1160}', '\u{3164}', '\u{FF41}', '\u{1D41A}', '\u{0430}', '\u{03BF}',
            '\u{00A0}', '\u{3000}', '\u{2028}', '\r', '\n', '\t', ' ', '\u{0007}', '\u{009B}',
            'e', 'A', '1', '!', 'ﬁ', '㎏', '①', 'Å', '\u{FF8A}', '\u{FF9E}',
        ]),
        // What opens a comment or a literal in pasted code (code.rs reads between them).
        2 => prop::sample::select(vec!['"', '/', '*', '#', '-', '`', '<', '!', '[', ']', '🔒']),
        2 => prop::char::range('a', 'z'),
    ]
}

fn tricky_text() -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..120).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn normalization_is_idempotent(s in tricky_text()) {
        let once = normalize(&s);
        prop_assert_eq!(normalize(&once), once);
    }

    #[test]
    fn output_holds_none_of_the_stripped_classes(s in tricky_text()) {
        let out = normalize(&s);
        prop_assert!(!out.chars().any(is_stripped), "{:?}", out);
    }

    #[test]
    fn output_never_grows_beyond_nfkc(s in tricky_text()) {
        let out = normalize(&s).chars().count();
        let nfkc = s.nfkc().count();
        prop_assert!(out <= nfkc, "{} > {}", out, nfkc);
    }

    #[test]
    fn sanitize_never_panics(s in tricky_text(), any_text in any::<String>()) {
        let policy = Policy::default();
        let _ = sanitize(&s, &policy);
        let _ = sanitize(&any_text, &policy);
    }

    #[test]
    fn ascii_and_unicode_paths_agree_on_ascii(s in "[ -~\t\n\r]{0,200}") {
        // The ASCII fast path must give what the general path gives: compare against a
        // non-ASCII suffix that the general path strips (a zero-width space).
        let general = normalize(&format!("{s}\u{200B}"));
        prop_assert_eq!(normalize(&s), general);
    }
}
