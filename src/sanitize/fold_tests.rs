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
            .map(|c| plain_look_alike(c).unwrap_or_else(|| ascii_quote(c)))
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
fn the_cjk_shortcut_is_the_character_predicates() {
    for c in ('\u{3000}'..='\u{D7FF}').filter(|c| is_cjk_letter(*c)) {
        assert!(c.is_alphabetic() && c.is_alphanumeric(), "{c:?}");
        assert!(!c.is_whitespace() && confusable(c).is_none(), "{c:?}");
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
fn ordinals_and_trailing_emphasis_are_not_leetspeak() {
    for text in [
        "the 5th pair",
        "1st and 3rd, 22nd.",
        "my glass pieces!!",
        "wow!!!",
        "example.com/2014/01/24/post",
        "公众号!在这里",
        "between 34th and 35th streets, the 77th edition",
        "handmade and 3d-printed",
        "ameya-2003",
    ] {
        assert_eq!(fold(text), lower(text), "{text}");
        assert!(!needs_fold(&lower(text)), "{text}");
    }
    // Still leetspeak: a symbol with letters after it, a digit at the end of a word.
    assert_eq!(fold("h!dden 1nstruct10ns"), "hidden instructions");
    assert_eq!(fold("h3ll0!!"), "hello!!");
    assert_eq!(fold("5ecret"), "secret");
    assert_eq!(fold("p455w0rd"), "password");
}

#[test]
fn the_plain_view_maps_look_alikes_of_scripts_no_rule_uses() {
    // Turkish dotless i and Greek read as ASCII already; Cyrillic stays for the Russian rules.
    assert_eq!(lower("SICAK hızlı"), "sicak hizli");
    assert_eq!(lower("ɪɢɴᴏʀᴇ"), "iɢnore");
    assert_eq!(lower("игнорируй"), "игнорируй");
    let (text, marks) = lower_marked("a ı b");
    assert_eq!(text, "a i b");
    assert_eq!(marks, vec![2]);
    assert!(!needs_fold(&lower("neşeli ve sıcak bir flamenko")));
}

#[test]
fn fold_leaves_ordinary_numbers_and_short_tokens_alone() {
    assert_eq!(
        fold("Use Vector3 in a 3D game at 60 fps, v2 costs $100"),
        "use vector3 in a 3d game at 60 fps, v2 costs $100"
    );
    assert_eq!(fold("a b c"), "a b c");
}
