//! Unit and property tests of folding: the line-by-line shortcut and `needs_fold` held to the
//! full fold, the byte paths held to the character definitions.

use super::*;
use proptest::prelude::*;

/// Characters every folding rule reacts to, in several scripts, so that short random strings
/// hit separator runs, leetspeak, lone letters and look-alikes often.
fn folding_text() -> impl Strategy<Value = String> {
    let alphabet = vec![
        'a', 'b', 'e', 'x', 'Q', 'é', 'ß', 'ж', 'а', 'ο', '漢', 'の', '🔥', '٣', '²', ' ', '\n',
        '.', '-', '/', '*', '_', '|', '~', '!', '@', '$', '0', '1', '3', '4', '5', '7', '8', '2',
        '9', ',', '\u{2019}',
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
        if let Some(f) = fold_changes(&lowered) {
            prop_assert_ne!(&f.text, &lowered);
            // Outside the changed ranges, line for line, the folded text is the lowered one.
            let mut marked = String::new();
            let mut at = 0;
            for r in &f.changed {
                marked.push_str(&f.text[at..r.start]);
                marked.push('\u{1}');
                at = r.end;
            }
            marked.push_str(&f.text[at..]);
            let lines: Vec<&str> = lowered.split('\n').collect();
            let kept: Vec<&str> = marked.split('\n').collect();
            prop_assert_eq!(lines.len(), kept.len());
            for (l, k) in lines.iter().zip(&kept) {
                prop_assert!(*k == "\u{1}" || k == l, "{:?} {:?}", l, k);
            }
        }
    }

    #[test]
    fn lowering_by_bytes_is_lowering_by_characters(s in any::<String>()) {
        let by_chars: String = s
            .chars()
            .flat_map(char::to_lowercase)
            .map(ascii_quote)
            .collect();
        prop_assert_eq!(lower(&s), by_chars);
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
