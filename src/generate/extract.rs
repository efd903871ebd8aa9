//! From a model's answer to a script's code: the fenced block the engine's language asks for.
//!
//! Models wrap code in prose and Markdown fences, sometimes in several blocks, sometimes cut off
//! at `max_tokens`. Extraction prefers the fenced block tagged with the engine's language (the
//! system prompt asks for exactly one), falls back to untagged and then any block, and says what
//! it did in warnings rather than failing: the caller still gets the best candidate. The name
//! comes from the code itself (the C# class, GDScript `class_name`, the Luau module table, …) so
//! the file name is the one the engine will accept, and from the prompt only when the code
//! declares nothing.

use crate::engine::Engine;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub code: String,
    pub warnings: Vec<String>,
}

struct Block<'a> {
    tag: String,
    body: &'a str,
    closed: bool,
}

/// Splits Markdown fences (``` or ~~~, three or more). An unclosed last fence runs to the end.
fn blocks(text: &str) -> Vec<Block<'_>> {
    let mut out = Vec::new();
    let mut open: Option<(char, usize, String, usize)> = None; // fence char, len, tag, body start
    let mut pos = 0;
    for line in lines(text) {
        let start = pos;
        pos += line.len();
        let trimmed = trim_start(line);
        let fence_char = match trimmed.chars().next() {
            Some(c @ ('`' | '~')) => c,
            _ => continue,
        };
        let run = trimmed.chars().take_while(|&c| c == fence_char).count();
        if run < 3 {
            continue;
        }
        match &open {
            None => {
                let tag = trimmed[run..].trim().to_ascii_lowercase();
                let tag = tag.split_whitespace().next().unwrap_or("").to_owned();
                open = Some((fence_char, run, tag, pos));
            }
            Some((c, n, _, _))
                if *c == fence_char && run >= *n && trimmed[run..].trim().is_empty() =>
            {
                if let Some((_, _, tag, body_start)) = open.take() {
                    out.push(Block {
                        tag,
                        body: &text[body_start..start],
                        closed: true,
                    });
                }
            }
            Some(_) => {}
        }
    }
    if let Some((_, _, tag, body_start)) = open {
        out.push(Block {
            tag,
            body: &text[body_start..],
            closed: false,
        });
    }
    out
}

/// The lines of `text`, each with its `\n`, as `str::split_inclusive('\n')` gives them: found
/// with one vectorised search over the whole answer instead of a search per line, which was about
/// half of extraction's cost (an answer is a few dozen short lines, and every miss extracts one).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', text.as_bytes()).map(|nl| nl + 1);
    ends.chain((!text.is_empty()).then_some(text.len()))
        .filter_map(move |end| {
            // A `\n` is one byte, so every end is a character boundary; the final end repeats
            // the last `\n`'s when the text ends with one, and is skipped.
            let line = text.get(start..end).filter(|l| !l.is_empty())?;
            start = end;
            Some(line)
        })
}

/// `str::trim_start`, with ASCII indentation skipped a byte at a time: only a line whose
/// indentation reaches a non-ASCII character goes through the Unicode check.
fn trim_start(line: &str) -> &str {
    let lead = line
        .bytes()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
        .unwrap_or(line.len());
    let rest = &line[lead..];
    if rest.as_bytes().first().is_some_and(|b| !b.is_ascii()) {
        rest.trim_start()
    } else {
        rest
    }
}

/// The code in a model's answer, for `engine`.
pub fn extract_code(text: &str, engine: Engine) -> Extracted {
    let mut warnings = Vec::new();
    let all = blocks(text);
    if all.is_empty() {
        let code = text.trim().to_owned();
        if !code.is_empty() {
            warnings.push(
                "no fenced code block in the answer; the whole answer is returned as code".into(),
            );
        }
        return Extracted { code, warnings };
    }
    let tagged: Vec<&Block> = all
        .iter()
        .filter(|b| engine.fence_tags().contains(&b.tag.as_str()))
        .collect();
    let chosen: Vec<&Block> = if !tagged.is_empty() {
        tagged
    } else {
        let untagged: Vec<&Block> = all.iter().filter(|b| b.tag.is_empty()).collect();
        warnings.push(format!(
            "no code block tagged {}; the best other block was used",
            engine.language()
        ));
        if untagged.is_empty() {
            all.iter().collect()
        } else {
            untagged
        }
    };
    if chosen.iter().any(|b| !b.closed) {
        warnings.push("the code block is not closed; the answer was probably cut off".into());
    }
    let code = if engine == Engine::Unreal {
        // A header and a source part arrive as two blocks; export splits them again by the
        // `// Name.h` / `// Name.cpp` lines the system prompt asks for.
        chosen
            .iter()
            .map(|b| b.body.trim_matches('\n').trim_end())
            .collect::<Vec<_>>()
            .join("\n\n")
    } else {
        if chosen.len() > 1 {
            warnings.push(format!(
                "the answer held {} code blocks; the longest was kept",
                chosen.len()
            ));
        }
        chosen
            .iter()
            .max_by_key(|b| b.body.len())
            .map(|b| b.body.trim_matches('\n').trim_end().to_owned())
            .unwrap_or_default()
    };
    Extracted { code, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn lines_and_indentation_match_the_standard_library_on_any_text(
            text in "[ \t\r\n\u{b}\u{c}\u{a0}\u{2003}\u{3000}`~aé]{0,40}"
        ) {
            let ours: Vec<&str> = lines(&text).collect();
            let std: Vec<&str> = text.split_inclusive('\n').collect();
            proptest::prop_assert_eq!(&ours, &std);
            for line in std {
                proptest::prop_assert_eq!(trim_start(line), line.trim_start());
            }
        }
    }

    #[test]
    fn lines_and_indentation_are_what_the_standard_library_gives() {
        for text in [
            "",
            "\n",
            "a",
            "a\n",
            "a\nb",
            "\n\nx\n",
            "  ```cs\n\u{a0}\u{2003} ```\r\n\t~~~\n",
            "é\n\u{3000}```\nend",
        ] {
            let ours: Vec<&str> = lines(text).collect();
            let std: Vec<&str> = text.split_inclusive('\n').collect();
            assert_eq!(ours, std, "{text:?}");
            for line in std {
                assert_eq!(trim_start(line), line.trim_start(), "{line:?}");
            }
        }
    }
    use crate::engine::has_unreal_source_part;

    #[test]
    fn picks_the_block_tagged_with_the_engine_language() {
        let text = "Here you go:\n```json\n{\"a\":1}\n```\n\n```csharp\nusing UnityEngine;\npublic class A : MonoBehaviour {}\n```\nEnjoy!";
        let e = extract_code(text, Engine::Unity);
        assert_eq!(
            e.code,
            "using UnityEngine;\npublic class A : MonoBehaviour {}"
        );
        assert!(e.warnings.is_empty());
    }

    #[test]
    fn unfenced_answer_is_returned_whole_with_a_warning() {
        let e = extract_code("  extends Node\n", Engine::Godot);
        assert_eq!(e.code, "extends Node");
        assert_eq!(e.warnings.len(), 1);
    }

    #[test]
    fn untagged_and_unclosed_blocks_are_used_with_warnings() {
        let e = extract_code("text\n```\nlocal M = {}\nreturn M\n```", Engine::Roblox);
        assert_eq!(e.code, "local M = {}\nreturn M");
        assert_eq!(e.warnings.len(), 1);
        let e = extract_code("```rust\nstruct A;\nfn main() {", Engine::Bevy);
        assert_eq!(e.code, "struct A;\nfn main() {");
        assert!(e.warnings.iter().any(|w| w.contains("cut off")));
    }

    #[test]
    fn longer_fences_may_contain_shorter_ones() {
        let text = "````markdown\n```csharp\nx\n```\n````\n```csharp\nclass B {}\n```";
        let e = extract_code(text, Engine::Unity);
        assert_eq!(e.code, "class B {}");
    }

    #[test]
    fn unreal_header_and_source_blocks_are_kept_together() {
        let text = "Class:\n```cpp\n// Door.h\n#pragma once\n```\n```cpp\n// Door.cpp\n#include \"Door.h\"\n```";
        let e = extract_code(text, Engine::Unreal);
        assert_eq!(
            e.code,
            "// Door.h\n#pragma once\n\n// Door.cpp\n#include \"Door.h\""
        );
        assert!(has_unreal_source_part(&e.code));
        assert!(!has_unreal_source_part(
            "// Door.h\n#include \"Door.generated.h\""
        ));
    }
}
