//! The seven game engines: language, file conventions and the system prompt for each, and the
//! naming rules ([`naming`]) that turn code into a script and file name.
//!
//! A leaf of the module graph: generation, export and the providers all depend on it and it
//! depends on none of them.
//!
//! One table in code so generation, naming and export agree on what "a Godot script" is. The
//! system prompts ask for exactly what extraction expects back: one complete script in one fenced
//! block tagged with the engine's language (Unreal: a header and a source block, each opened by a
//! comment naming its file), so the answer needs no guessing downstream.

mod naming;

use std::fmt;

pub use naming::{
    detect_script_name, file_name, has_unreal_source_part, name_from_prompt, snake_case,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Unity,
    Unreal,
    Godot,
    Roblox,
    Phaser,
    Bevy,
    Love2d,
}

/// How an engine's files are named on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCase {
    /// `PlayerController.cs`: the file name is the type name (Unity requires it).
    Pascal,
    /// `player_controller.gd`: the language's own convention for module files.
    Snake,
}

impl Engine {
    pub const ALL: [Engine; 7] = [
        Engine::Unity,
        Engine::Unreal,
        Engine::Godot,
        Engine::Roblox,
        Engine::Phaser,
        Engine::Bevy,
        Engine::Love2d,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Unity => "unity",
            Engine::Unreal => "unreal",
            Engine::Godot => "godot",
            Engine::Roblox => "roblox",
            Engine::Phaser => "phaser",
            Engine::Bevy => "bevy",
            Engine::Love2d => "love2d",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// [`Engine::parse`] for a request field: absent means Unity, unknown is a sentence that
    /// lists the choices.
    pub fn from_field(s: Option<&str>) -> Result<Self, String> {
        match s {
            None => Ok(Engine::Unity),
            Some(e) => Engine::parse(e).ok_or_else(|| {
                format!(
                    "unknown engine; expected one of {}",
                    Engine::ALL.map(Engine::as_str).join(", ")
                )
            }),
        }
    }

    /// The language name used in responses (and as the preferred fence tag).
    pub fn language(self) -> &'static str {
        match self {
            Engine::Unity => "csharp",
            Engine::Unreal => "cpp",
            Engine::Godot => "gdscript",
            Engine::Roblox => "luau",
            Engine::Phaser => "typescript",
            Engine::Bevy => "rust",
            Engine::Love2d => "lua",
        }
    }

    /// The main file's extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Engine::Unity => "cs",
            Engine::Unreal => "cpp",
            Engine::Godot => "gd",
            Engine::Roblox => "luau",
            Engine::Phaser => "ts",
            Engine::Bevy => "rs",
            Engine::Love2d => "lua",
        }
    }

    pub fn file_case(self) -> FileCase {
        match self {
            Engine::Unity | Engine::Unreal | Engine::Roblox | Engine::Phaser => FileCase::Pascal,
            Engine::Godot | Engine::Bevy | Engine::Love2d => FileCase::Snake,
        }
    }

    /// Fence info strings models use for this language, lower-case.
    pub fn fence_tags(self) -> &'static [&'static str] {
        match self {
            Engine::Unity => &["csharp", "cs", "c#"],
            Engine::Unreal => &["cpp", "c++", "cxx", "cc", "h", "hpp"],
            Engine::Godot => &["gdscript", "gd", "godot"],
            Engine::Roblox => &["luau", "lua"],
            Engine::Phaser => &["typescript", "ts", "javascript", "js"],
            Engine::Bevy => &["rust", "rs"],
            Engine::Love2d => &["lua"],
        }
    }

    /// What the model is told before the user's prompt.
    pub fn system_prompt(self) -> &'static str {
        match self {
            Engine::Unity => concat!(
                "You are a senior Unity developer writing production C# for Unity 6. ",
                "Write exactly one complete, compilable C# script that does what the user asks. ",
                "Use a MonoBehaviour (or ScriptableObject where data is the point) whose class name is in PascalCase and matches the file it would live in; ",
                "use [SerializeField] private fields for tunables, cache component lookups in Awake, read input in Update and apply physics in FixedUpdate. ",
                "Only `using` namespaces that exist at runtime (never UnityEditor in a runtime script). ",
                "Answer with a one-sentence explanation followed by a single fenced ```csharp block, and nothing after it."
            ),
            Engine::Unreal => concat!(
                "You are a senior Unreal Engine 5 developer writing production C++. ",
                "Write one complete class that compiles in a UE5 project module: a header and a source file. ",
                "Follow Unreal conventions: UCLASS/UPROPERTY/UFUNCTION macros, the A/U/F prefixes, GENERATED_BODY(), the MYPROJECT_API export macro, and the .generated.h include last in the header. ",
                "Answer with two fenced ```cpp blocks: the first starts with the line `// Name.h`, the second with `// Name.cpp` and `#include \"Name.h\"`, where Name is the class name without its prefix. ",
                "Add a one-sentence explanation before the code and nothing after it."
            ),
            Engine::Godot => concat!(
                "You are a senior Godot 4 developer writing production GDScript 2.0. ",
                "Write exactly one complete script: `extends` the right node type, declare `class_name` in PascalCase, use typed variables, @export for tunables, @onready for child nodes, signals for events, and _physics_process for movement. ",
                "Answer with a one-sentence explanation followed by a single fenced ```gdscript block, and nothing after it."
            ),
            Engine::Roblox => concat!(
                "You are a senior Roblox developer writing production Luau. ",
                "Write exactly one complete ModuleScript: a local table named in PascalCase that is returned at the end, `--!strict` types, services obtained with game:GetService, and connections cleaned up. ",
                "Answer with a one-sentence explanation followed by a single fenced ```luau block, and nothing after it."
            ),
            Engine::Phaser => concat!(
                "You are a senior Phaser 3 developer writing production TypeScript. ",
                "Write exactly one complete module: an exported class in PascalCase (a Phaser.Scene, or a Phaser.GameObjects/Physics subclass), strict types, no `any`, and create/update lifecycle methods as Phaser expects. ",
                "Answer with a one-sentence explanation followed by a single fenced ```typescript block, and nothing after it."
            ),
            Engine::Bevy => concat!(
                "You are a senior Bevy developer writing production Rust for Bevy 0.16. ",
                "Write exactly one complete module: components as #[derive(Component)] structs, systems as plain functions with queries, and a Plugin struct in PascalCase that registers them. It must compile without warnings. ",
                "Answer with a one-sentence explanation followed by a single fenced ```rust block, and nothing after it."
            ),
            Engine::Love2d => concat!(
                "You are a senior LÖVE (love2d 11) developer writing production Lua. ",
                "Write exactly one complete module: a local table in PascalCase with a `new` constructor, `update(dt)` and `draw()` methods, using love.graphics/love.keyboard APIs, returned at the end. ",
                "Answer with a one-sentence explanation followed by a single fenced ```lua block, and nothing after it."
            ),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_round_trips_and_has_a_distinct_prompt() {
        let mut prompts = std::collections::HashSet::new();
        for e in Engine::ALL {
            assert_eq!(Engine::parse(e.as_str()), Some(e));
            assert!(e.fence_tags().contains(&e.language()));
            assert!(
                e.system_prompt().contains(&format!("```{}", e.language())),
                "{e}"
            );
            assert!(prompts.insert(e.system_prompt()));
        }
        assert_eq!(Engine::parse("Unity"), None);
        assert_eq!(Engine::parse("cryengine"), None);
    }
}
