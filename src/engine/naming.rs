//! Script names and file names: what the code declares, what the prompt suggests, and the file
//! name each engine accepts.
//!
//! A leaf beside [`super::Engine`] because generation (naming an answer), export (checking a
//! name the caller gives) and the simulator (writing code under a name) all need the same rules;
//! keeping them here keeps those three modules independent of each other. The name comes from
//! the code itself (the C# class, GDScript `class_name`, the Luau module table, …) so the file
//! name is the one the engine will accept, and from the prompt only when the code declares
//! nothing.

use std::sync::LazyLock;

use regex::{Regex, bytes};

use super::{Engine, FileCase};

/// A declaration pattern, compiled twice. Most code is all ASCII, and there the pattern with
/// ASCII classes matches exactly what the one with Unicode classes does (Unicode `\w`, `\s` and
/// `\b` agree with their ASCII forms on ASCII text), for less: the capture search runs a bounded
/// backtracker whose visited table grows with the states of the Unicode classes (naming a Unity
/// script cost 8,750 instructions of a ~330,000-instruction miss, 6,500 this way, under callgrind:
/// `loadtest/hit_callgrind.py --scenario generate-miss`). Code with any non-ASCII character uses
/// the Unicode form, so `class Spielertür` is still named whole.
struct Declaration {
    unicode: LazyLock<Regex>,
    ascii: LazyLock<bytes::Regex>,
}

macro_rules! declaration {
    ($s:expr) => {
        Declaration {
            unicode: LazyLock::new(|| Regex::new($s).unwrap_or_else(|e| unreachable_regex(&e))),
            ascii: LazyLock::new(|| {
                bytes::RegexBuilder::new($s)
                    .unicode(false)
                    .build()
                    .unwrap_or_else(|e| unreachable_regex(&e))
            }),
        }
    };
}

#[expect(
    clippy::panic,
    reason = "the patterns are literals covered by unit tests; a typo must fail the first test run"
)]
fn unreachable_regex<T>(e: &regex::Error) -> T {
    panic!("invalid built-in regex: {e}")
}

// Patterns are compiled once: they are constants of the language, not state.
static CS_BEHAVIOUR: Declaration = declaration!(
    r"(?m)^\s*(?:\[[^\]]*\]\s*)*(?:public\s+|internal\s+)?(?:sealed\s+|abstract\s+|partial\s+)*class\s+([A-Za-z_]\w*)\s*:\s*(?:MonoBehaviour|ScriptableObject|NetworkBehaviour|StateMachineBehaviour|Editor|EditorWindow)\b"
);
static CS_CLASS: Declaration = declaration!(
    r"(?m)^\s*(?:public\s+|internal\s+)?(?:static\s+|sealed\s+|abstract\s+|partial\s+)*(?:class|struct|interface|enum)\s+([A-Za-z_]\w*)"
);
static UE_CLASS: Declaration = declaration!(
    r"(?m)^\s*(?:class|struct)\s+(?:[A-Z0-9_]+_API\s+)?[AUFSIE]([A-Z]\w*)\s*(?::|\{|$)"
);
static GD_CLASS_NAME: Declaration = declaration!(r"(?m)^\s*class_name\s+([A-Za-z_]\w*)");
static LUA_RETURN: Declaration = declaration!(r"(?m)^\s*return\s+([A-Za-z_]\w*)\s*$");
static LUA_TABLE: Declaration =
    declaration!(r"(?m)^\s*local\s+([A-Z]\w*)\s*(?::\s*[^=]+)?=\s*(?:\{|setmetatable)");
static TS_CLASS: Declaration =
    declaration!(r"(?m)^\s*export\s+(?:default\s+)?(?:abstract\s+)?class\s+([A-Za-z_$][\w$]*)");
static TS_ANY_CLASS: Declaration =
    declaration!(r"(?m)^\s*(?:abstract\s+)?class\s+([A-Za-z_$][\w$]*)");
static RS_PLUGIN: Declaration = declaration!(r"impl\s+Plugin\s+for\s+([A-Za-z_]\w*)");
static RS_STRUCT: Declaration =
    declaration!(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?struct\s+([A-Za-z_]\w*)");

fn first(d: &Declaration, code: &str) -> Option<String> {
    if code.is_ascii() {
        let m = d.ascii.captures(code.as_bytes())?.get(1)?;
        // ASCII throughout, so any slice of it is UTF-8.
        std::str::from_utf8(m.as_bytes()).ok().map(str::to_owned)
    } else {
        d.unicode
            .captures(code)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().to_owned())
    }
}

/// The script's name as the code declares it, if it does.
pub fn detect_script_name(code: &str, engine: Engine) -> Option<String> {
    match engine {
        Engine::Unity => first(&CS_BEHAVIOUR, code).or_else(|| first(&CS_CLASS, code)),
        Engine::Unreal => first(&UE_CLASS, code),
        Engine::Godot => first(&GD_CLASS_NAME, code),
        Engine::Roblox | Engine::Love2d => {
            // A module returns its table: prefer the returned name when it is also declared.
            let table = first(&LUA_TABLE, code);
            let ret = first(&LUA_RETURN, code);
            match (table, ret) {
                (Some(t), Some(r)) if t == r => Some(t),
                (Some(t), _) => Some(t),
                (None, Some(r)) if r.starts_with(|c: char| c.is_ascii_uppercase()) => Some(r),
                _ => None,
            }
        }
        Engine::Phaser => first(&TS_CLASS, code).or_else(|| first(&TS_ANY_CLASS, code)),
        Engine::Bevy => first(&RS_PLUGIN, code).or_else(|| first(&RS_STRUCT, code)),
    }
}

/// Words that describe the request rather than the thing requested.
const FILLER: &[&str] = &[
    "a",
    "an",
    "the",
    "create",
    "make",
    "write",
    "build",
    "generate",
    "implement",
    "add",
    "give",
    "me",
    "please",
    "i",
    "need",
    "want",
    "can",
    "you",
    "simple",
    "basic",
    "new",
    "my",
    "for",
    "script",
    "class",
    "code",
    "component",
    "module",
    "unity",
    "unreal",
    "godot",
    "roblox",
    "phaser",
    "bevy",
    "love2d",
    "love",
    "ue5",
    "ue4",
    "c#",
    "csharp",
    "gdscript",
    "luau",
    "lua",
    "typescript",
    "rust",
    "cpp",
    "c++",
    "game",
    "that",
    "which",
    "some",
    "of",
    "to",
    "in",
    "using",
    "3d",
    "2d",
];

/// Words after which the rest describes features, not the name ("… with double jump").
const STOP: &[&str] = &[
    "with",
    "that",
    "which",
    "where",
    "so",
    "using",
    "including",
    "and",
    "to",
    "for",
    "when",
];

/// A PascalCase name for the thing a prompt asks for: "Create a Unity player controller with
/// double jump" gives `PlayerController`. `None` when nothing usable is left.
pub fn name_from_prompt(prompt: &str) -> Option<String> {
    let words: Vec<String> = prompt
        .split(|c: char| !(c.is_alphanumeric() || c == '#' || c == '+'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut picked: Vec<&str> = Vec::new();
    for w in &words {
        if !picked.is_empty() && STOP.contains(&w.as_str()) {
            break;
        }
        if FILLER.contains(&w.as_str()) || !w.chars().all(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        picked.push(w);
        if picked.len() == 3 {
            break;
        }
    }
    let name: String = picked
        .iter()
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    match name.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => Some(name),
        Some(_) => Some(format!("Script{name}")),
        None => None,
    }
}

/// `PlayerController` → `player_controller`; acronyms stay together (`HUDManager` → `hud_manager`).
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The file a script of this name and code is saved as.
pub fn file_name(engine: Engine, name: &str, code: &str) -> String {
    let stem = match engine.file_case() {
        FileCase::Pascal => name.to_owned(),
        FileCase::Snake => snake_case(name),
    };
    let ext = if engine == Engine::Unreal && !has_unreal_source_part(code) {
        "h"
    } else {
        engine.extension()
    };
    format!("{stem}.{ext}")
}

/// Whether Unreal code holds a `.cpp` part (function bodies of the class) and not just a header.
pub fn has_unreal_source_part(code: &str) -> bool {
    code.lines().any(|l| {
        let t = l.trim();
        (t.starts_with("//") && t.ends_with(".cpp"))
            || (t.starts_with("#include \"") && t.ends_with(".h\"") && !t.contains(".generated.h"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_each_languages_declarations() {
        let cases = [
            (
                Engine::Unity,
                "using UnityEngine;\n[RequireComponent(typeof(Rigidbody))]\npublic class PlayerController : MonoBehaviour\n{}",
                "PlayerController",
            ),
            (
                Engine::Unity,
                "public struct Helper {}\npublic sealed class Door : MonoBehaviour {}",
                "Door",
            ),
            (
                Engine::Unreal,
                "UCLASS()\nclass MYPROJECT_API AEnemySpawner : public AActor\n{",
                "EnemySpawner",
            ),
            (
                Engine::Godot,
                "extends CharacterBody2D\nclass_name Player\n",
                "Player",
            ),
            (
                Engine::Roblox,
                "--!strict\nlocal Inventory = {}\nInventory.__index = Inventory\nreturn Inventory\n",
                "Inventory",
            ),
            (
                Engine::Phaser,
                "import Phaser from 'phaser';\nexport default class MainScene extends Phaser.Scene {}",
                "MainScene",
            ),
            (
                Engine::Bevy,
                "#[derive(Component)]\nstruct Health(f32);\npub struct CombatPlugin;\nimpl Plugin for CombatPlugin {",
                "CombatPlugin",
            ),
            (
                Engine::Love2d,
                "local Player = {}\nPlayer.__index = Player\nreturn Player",
                "Player",
            ),
        ];
        for (engine, code, name) in cases {
            assert_eq!(
                detect_script_name(code, engine).as_deref(),
                Some(name),
                "{engine}"
            );
        }
        assert_eq!(detect_script_name("print('hi')", Engine::Love2d), None);
    }

    const ALL: [&Declaration; 10] = [
        &CS_BEHAVIOUR,
        &CS_CLASS,
        &UE_CLASS,
        &GD_CLASS_NAME,
        &LUA_RETURN,
        &LUA_TABLE,
        &TS_CLASS,
        &TS_ANY_CLASS,
        &RS_PLUGIN,
        &RS_STRUCT,
    ];

    /// Where each form puts the name's capture in `code`.
    fn ascii_capture(d: &Declaration, code: &str) -> Option<std::ops::Range<usize>> {
        d.ascii.captures(code.as_bytes())?.get(1).map(|m| m.range())
    }

    fn unicode_capture(d: &Declaration, code: &str) -> Option<std::ops::Range<usize>> {
        d.unicode.captures(code)?.get(1).map(|m| m.range())
    }

    proptest::proptest! {
        #[test]
        fn on_any_ascii_code_both_forms_capture_the_same_name(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "public ", "internal ", "sealed ", "partial ", "static ", "abstract ", "export ",
                "default ", "class ", "struct ", "class_name ", "local ", "return ", "impl ",
                "Plugin ", "for ", "pub(crate) ", "MYGAME_API ", "[Serializable]", ": ", "= ",
                "{", "}", "setmetatable", "MonoBehaviour", "Editor", "AEnemy", "Door_2", "$x",
                "Foo", "9a", " ", "\t", "\n", "\r\n", ";",
            ]), 0..24)
        ) {
            let code = parts.concat();
            for d in ALL {
                proptest::prop_assert_eq!(ascii_capture(d, &code), unicode_capture(d, &code), "{:?}", code);
            }
        }
    }

    #[test]
    fn ascii_and_unicode_forms_name_ascii_code_alike_and_unicode_names_stay_whole() {
        let codes = [
            "using UnityEngine;\n[RequireComponent(typeof(Rigidbody))]\n  public sealed partial class Door_2 : MonoBehaviour\n{}",
            "internal static class Util {}\nenum Mode { A }",
            "UCLASS()\nclass MYPROJECT_API AEnemySpawner : public AActor\n{\nstruct FStats {",
            "extends Node\n\tclass_name Player_1\n",
            "local Inventory: Types.Inv = setmetatable({}, Base)\nreturn Inventory   \n",
            "export default abstract class $Scene extends Phaser.Scene {}\nclass Other {}",
            "pub(crate) struct Health(f32);\nimpl   Plugin\tfor CombatPlugin {",
            "no declaration here\n",
        ];
        for (i, d) in ALL.into_iter().enumerate() {
            for code in codes {
                assert_eq!(
                    ascii_capture(d, code),
                    unicode_capture(d, code),
                    "pattern {i} on {code:?}"
                );
            }
        }
        // The fixtures name something for every pattern, so the comparison above is not
        // between two misses.
        for (i, d) in ALL.into_iter().enumerate() {
            assert!(
                codes.iter().any(|c| ascii_capture(d, c).is_some()),
                "no fixture for pattern {i}"
            );
        }
        // One non-ASCII character anywhere sends the code to the Unicode form.
        assert_eq!(
            detect_script_name(
                "// Tür\npublic class Spielertür : MonoBehaviour {}",
                Engine::Unity
            )
            .as_deref(),
            Some("Spielertür")
        );
        assert_eq!(
            detect_script_name("class_name Spieler\n# größer", Engine::Godot).as_deref(),
            Some("Spieler")
        );
    }

    #[test]
    fn prompt_names_skip_filler_and_stop_at_features() {
        assert_eq!(
            name_from_prompt("Create a Unity player controller with double jump").as_deref(),
            Some("PlayerController")
        );
        assert_eq!(
            name_from_prompt("make me an inventory system that stacks items").as_deref(),
            Some("InventorySystem")
        );
        assert_eq!(
            name_from_prompt("3 lane runner").as_deref(),
            Some("Script3LaneRunner")
        );
        assert_eq!(name_from_prompt("create a script").as_deref(), None);
        assert_eq!(name_from_prompt("").as_deref(), None);
    }

    #[test]
    fn file_names_follow_engine_conventions() {
        assert_eq!(
            file_name(Engine::Unity, "PlayerController", ""),
            "PlayerController.cs"
        );
        assert_eq!(
            file_name(Engine::Godot, "PlayerController", ""),
            "player_controller.gd"
        );
        assert_eq!(file_name(Engine::Bevy, "HUDManager", ""), "hud_manager.rs");
        assert_eq!(file_name(Engine::Roblox, "Inventory", ""), "Inventory.luau");
        assert_eq!(file_name(Engine::Unreal, "Door", "// Door.h"), "Door.h");
        assert_eq!(
            file_name(Engine::Unreal, "Door", "// Door.h\n// Door.cpp"),
            "Door.cpp"
        );
        assert_eq!(snake_case("Player2Controller"), "player2_controller");
    }
}
