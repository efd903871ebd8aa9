//! Script names: identifier rules and reserved words of each engine's language, and the
//! file-system names that must never be produced.
//!
//! A script name ends up in a file name and in a `Content-Disposition` header, so [`ScriptName`]
//! is only constructed through [`ScriptName::parse`], which refuses anything that is not a plain
//! identifier of the engine's language: no separators, dots, quotes, controls, reserved device
//! names or over-long names can get through, whatever the engine.

use crate::engine::Engine;

/// Longest script name accepted, in characters. Far above any real class name and well under
/// every file system's limit once an extension is added.
pub const MAX_NAME_CHARS: usize = 100;

/// A validated script name for one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptName(String);

impl ScriptName {
    pub fn parse(raw: &str, engine: Engine) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("scriptName must not be empty".into());
        }
        // The checks below name the problem without echoing the raw value, which may hold
        // control characters or markup.
        if raw.chars().any(char::is_control) {
            return Err("scriptName must not contain control characters".into());
        }
        if raw.contains(['/', '\\']) || raw.contains("..") {
            return Err("scriptName must be a bare name, not a path".into());
        }
        if raw.contains(['"', '\'', '`']) {
            return Err("scriptName must not contain quotes".into());
        }
        let chars = raw.chars().count();
        if chars > MAX_NAME_CHARS {
            return Err(format!(
                "scriptName is {chars} characters long; the limit is {MAX_NAME_CHARS}"
            ));
        }
        if is_reserved_device_name(raw) {
            return Err(
                "scriptName is a reserved device name on Windows (CON, NUL, COM1, …)".into(),
            );
        }
        if !is_identifier(raw, engine) {
            return Err(format!(
                "scriptName must be a valid {} identifier: {}",
                engine.language(),
                identifier_rule(engine)
            ));
        }
        if is_reserved_word(engine, raw) {
            return Err(format!(
                "scriptName is a reserved word in {}",
                engine.language()
            ));
        }
        Ok(ScriptName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Windows device names, which cannot be file names with any extension.
fn is_reserved_device_name(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).to_ascii_uppercase();
    matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) || ((stem.starts_with("COM") || stem.starts_with("LPT"))
        && stem.len() == 4
        && stem.as_bytes()[3].is_ascii_digit())
}

/// Whether identifiers of this language may use Unicode letters (C#, GDScript, TypeScript and Rust
/// do; C++ as Unreal builds it, Luau and Lua are ASCII).
fn unicode_identifiers(engine: Engine) -> bool {
    matches!(
        engine,
        Engine::Unity | Engine::Godot | Engine::Phaser | Engine::Bevy
    )
}

fn identifier_rule(engine: Engine) -> &'static str {
    if unicode_identifiers(engine) {
        "a letter or underscore, then letters, digits or underscores"
    } else {
        "an ASCII letter or underscore, then ASCII letters, digits or underscores"
    }
}

fn is_identifier(name: &str, engine: Engine) -> bool {
    let unicode = unicode_identifiers(engine);
    let start_ok = |c: char| {
        c == '_'
            || if unicode {
                c.is_alphabetic()
            } else {
                c.is_ascii_alphabetic()
            }
    };
    let continue_ok = |c: char| {
        c == '_'
            || if unicode {
                c.is_alphanumeric()
            } else {
                c.is_ascii_alphanumeric()
            }
    };
    let mut chars = name.chars();
    chars.next().is_some_and(start_ok) && chars.all(continue_ok)
}

const LUA_KEYWORDS: &[&str] = &[
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
];
const LUAU_EXTRA: &[&str] = &["continue", "export", "type", "typeof"];

/// Whether `name` is reserved in the engine's language.
pub fn is_reserved_word(engine: Engine, name: &str) -> bool {
    reserved_words(engine).contains(&name)
        || (engine == Engine::Roblox && LUAU_EXTRA.contains(&name))
}

fn reserved_words(engine: Engine) -> &'static [&'static str] {
    match engine {
        Engine::Unity => &[
            "abstract",
            "as",
            "base",
            "bool",
            "break",
            "byte",
            "case",
            "catch",
            "char",
            "checked",
            "class",
            "const",
            "continue",
            "decimal",
            "default",
            "delegate",
            "do",
            "double",
            "else",
            "enum",
            "event",
            "explicit",
            "extern",
            "false",
            "finally",
            "fixed",
            "float",
            "for",
            "foreach",
            "goto",
            "if",
            "implicit",
            "in",
            "int",
            "interface",
            "internal",
            "is",
            "lock",
            "long",
            "namespace",
            "new",
            "null",
            "object",
            "operator",
            "out",
            "override",
            "params",
            "private",
            "protected",
            "public",
            "readonly",
            "ref",
            "return",
            "sbyte",
            "sealed",
            "short",
            "sizeof",
            "stackalloc",
            "static",
            "string",
            "struct",
            "switch",
            "this",
            "throw",
            "true",
            "try",
            "typeof",
            "uint",
            "ulong",
            "unchecked",
            "unsafe",
            "ushort",
            "using",
            "virtual",
            "void",
            "volatile",
            "while",
        ],
        Engine::Unreal => &[
            "alignas",
            "alignof",
            "and",
            "and_eq",
            "asm",
            "auto",
            "bitand",
            "bitor",
            "bool",
            "break",
            "case",
            "catch",
            "char",
            "char8_t",
            "char16_t",
            "char32_t",
            "class",
            "compl",
            "concept",
            "const",
            "consteval",
            "constexpr",
            "constinit",
            "const_cast",
            "continue",
            "co_await",
            "co_return",
            "co_yield",
            "decltype",
            "default",
            "delete",
            "do",
            "double",
            "dynamic_cast",
            "else",
            "enum",
            "explicit",
            "export",
            "extern",
            "false",
            "float",
            "for",
            "friend",
            "goto",
            "if",
            "inline",
            "int",
            "long",
            "mutable",
            "namespace",
            "new",
            "noexcept",
            "not",
            "not_eq",
            "nullptr",
            "operator",
            "or",
            "or_eq",
            "private",
            "protected",
            "public",
            "register",
            "reinterpret_cast",
            "requires",
            "return",
            "short",
            "signed",
            "sizeof",
            "static",
            "static_assert",
            "static_cast",
            "struct",
            "switch",
            "template",
            "this",
            "thread_local",
            "throw",
            "true",
            "try",
            "typedef",
            "typeid",
            "typename",
            "union",
            "unsigned",
            "using",
            "virtual",
            "void",
            "volatile",
            "wchar_t",
            "while",
            "xor",
            "xor_eq",
        ],
        Engine::Godot => &[
            "if",
            "elif",
            "else",
            "for",
            "while",
            "match",
            "when",
            "break",
            "continue",
            "pass",
            "return",
            "class",
            "class_name",
            "extends",
            "is",
            "in",
            "as",
            "self",
            "super",
            "signal",
            "func",
            "static",
            "const",
            "enum",
            "var",
            "breakpoint",
            "preload",
            "await",
            "yield",
            "assert",
            "void",
            "PI",
            "TAU",
            "INF",
            "NAN",
            "not",
            "and",
            "or",
            "true",
            "false",
            "null",
        ],
        // Luau is Lua with a few more reserved words; see `LUAU_EXTRA`.
        Engine::Roblox | Engine::Love2d => LUA_KEYWORDS,
        Engine::Phaser => &[
            "break",
            "case",
            "catch",
            "class",
            "const",
            "continue",
            "debugger",
            "default",
            "delete",
            "do",
            "else",
            "enum",
            "export",
            "extends",
            "false",
            "finally",
            "for",
            "function",
            "if",
            "import",
            "in",
            "instanceof",
            "new",
            "null",
            "return",
            "super",
            "switch",
            "this",
            "throw",
            "true",
            "try",
            "typeof",
            "var",
            "void",
            "while",
            "with",
            "implements",
            "interface",
            "let",
            "package",
            "private",
            "protected",
            "public",
            "static",
            "yield",
            "any",
            "boolean",
            "constructor",
            "declare",
            "get",
            "module",
            "require",
            "number",
            "set",
            "string",
            "symbol",
            "type",
            "from",
            "of",
            "async",
            "await",
            "undefined",
        ],
        Engine::Bevy => &[
            "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn",
            "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
            "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
            "unsafe", "use", "where", "while", "async", "await", "dyn", "abstract", "become",
            "box", "do", "final", "gen", "macro", "override", "priv", "typeof", "unsized",
            "virtual", "yield", "try",
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identifiers_pass_and_unicode_only_where_the_language_allows() {
        assert!(ScriptName::parse("PlayerController", Engine::Unity).is_ok());
        assert!(ScriptName::parse("_Helper2", Engine::Love2d).is_ok());
        assert!(ScriptName::parse("Spieler_Übung", Engine::Unity).is_ok());
        assert!(ScriptName::parse("Spieler_Übung", Engine::Godot).is_ok());
        assert!(ScriptName::parse("Spieler_Übung", Engine::Roblox).is_err());
        assert!(ScriptName::parse("Spieler_Übung", Engine::Unreal).is_err());
    }

    #[test]
    fn hostile_names_are_refused_with_a_reason() {
        for (name, why) in [
            ("", "empty"),
            ("../../etc/passwd", "path"),
            ("a/b", "path"),
            ("a\\b", "path"),
            ("..", "path"),
            ("Evil\r\nSet-Cookie: x", "control"),
            ("Nul\0Byte", "control"),
            ("Say\"Hi", "quotes"),
            ("it's", "quotes"),
            ("CON", "device"),
            ("nul", "device"),
            ("Com1", "device"),
            ("LPT9", "device"),
            ("1Player", "identifier"),
            ("Player Controller", "identifier"),
            ("Player.Controller", "identifier"),
        ] {
            let err = ScriptName::parse(name, Engine::Unity).unwrap_err();
            let expected = match why {
                "empty" => "empty",
                "path" => "path",
                "control" => "control",
                "quotes" => "quotes",
                "device" => "device",
                _ => "identifier",
            };
            assert!(err.contains(expected), "{name:?}: {err}");
        }
        let long = "A".repeat(MAX_NAME_CHARS + 1);
        assert!(
            ScriptName::parse(&long, Engine::Unity)
                .unwrap_err()
                .contains("limit")
        );
    }

    #[test]
    fn reserved_words_are_refused_per_language() {
        assert!(ScriptName::parse("class", Engine::Unity).is_err());
        assert!(ScriptName::parse("Class", Engine::Unity).is_ok());
        assert!(ScriptName::parse("func", Engine::Godot).is_err());
        assert!(ScriptName::parse("func", Engine::Unity).is_ok());
        assert!(ScriptName::parse("local", Engine::Roblox).is_err());
        assert!(ScriptName::parse("continue", Engine::Roblox).is_err());
        assert!(ScriptName::parse("continue", Engine::Love2d).is_ok());
        assert!(ScriptName::parse("Self", Engine::Bevy).is_err());
        assert!(ScriptName::parse("constructor", Engine::Phaser).is_err());
        assert!(ScriptName::parse("nullptr", Engine::Unreal).is_err());
        assert!(ScriptName::parse("goto", Engine::Love2d).is_err());
    }
}
