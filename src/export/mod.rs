//! Script export: code in, a file the engine accepts out.
//!
//! Beside the generation path: `POST /api/export` hands generated (or edited) code back as a
//! download. This module knows nothing of HTTP; it validates names ([`ScriptName`]), picks each
//! engine's file naming (the same convention generation reports in `fileName`), splits Unreal
//! code into its header and source parts, builds zip bundles, and collects warnings about what
//! the engine itself would reject. The handler only turns an [`Export`] into headers and a body.

mod naming;

use std::io::Write;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

pub use naming::{MAX_NAME_CHARS, ScriptName, is_reserved_word};

use crate::engine::{Engine, FileCase, detect_script_name, snake_case};

mod headers;

pub use headers::{
    MAX_HEADER_WARNING_BYTES, MAX_HEADER_WARNINGS, content_disposition, header_safe,
    warnings_header,
};

/// Most files a bundle may hold.
pub const MAX_BUNDLE_FILES: usize = 50;

/// `POST /api/export` as sent: one file (`code` + `scriptName`) or a bundle (`files`).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportParams {
    pub code: Option<String>,
    pub script_name: Option<String>,
    pub engine: Option<String>,
    pub files: Option<Vec<FileParams>>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileParams {
    pub code: Option<String>,
    pub script_name: Option<String>,
}

/// A download.
#[derive(Debug, Clone, PartialEq)]
pub enum Export {
    /// One text file.
    File {
        file_name: String,
        body: String,
        warnings: Vec<String>,
    },
    /// A zip archive (a bundle, or an Unreal class split into `.h` and `.cpp`).
    Archive {
        file_name: String,
        body: Vec<u8>,
        /// The entries in archive order, for logs and tests.
        entries: Vec<String>,
        warnings: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Invalid(String),
    #[error("could not build the archive: {0}")]
    Archive(String),
}

fn invalid(msg: impl Into<String>) -> ExportError {
    ExportError::Invalid(msg.into())
}

/// One file of the output, before packaging.
struct OutFile {
    name: String,
    body: String,
}

/// Validates and packages the request.
pub fn export(params: ExportParams) -> Result<Export, ExportError> {
    let engine = Engine::from_field(params.engine.as_deref()).map_err(ExportError::Invalid)?;
    match (params.files, params.code, params.script_name) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(invalid(
            "send either code and scriptName for one file, or files for a bundle, not both",
        )),
        (Some(files), None, None) => bundle(files, engine),
        (None, code, name) => {
            let mut warnings = Vec::new();
            let (name, code) = checked(code, name, engine, "")?;
            let files = script_files(&name, &code, engine, &mut warnings);
            match <[OutFile; 1]>::try_from(files) {
                Ok([single]) => Ok(Export::File {
                    file_name: single.name,
                    body: single.body,
                    warnings,
                }),
                Err(files) => archive(format!("{}.zip", name.as_str()), files, warnings),
            }
        }
    }
}

fn bundle(files: Vec<FileParams>, engine: Engine) -> Result<Export, ExportError> {
    if files.is_empty() {
        return Err(invalid("files must hold at least one file"));
    }
    if files.len() > MAX_BUNDLE_FILES {
        return Err(invalid(format!(
            "files holds {} entries; the limit is {MAX_BUNDLE_FILES}",
            files.len()
        )));
    }
    let mut warnings = Vec::new();
    let mut out = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let (name, code) = checked(f.code, f.script_name, engine, &format!("files[{i}]."))?;
        out.extend(script_files(&name, &code, engine, &mut warnings));
    }
    // Two entries that differ only in case collide on Windows and macOS file systems.
    let mut seen = std::collections::HashSet::new();
    for f in &out {
        if !seen.insert(f.name.to_lowercase()) {
            return Err(invalid(format!(
                "two files would both be named {}",
                header_safe(&f.name)
            )));
        }
    }
    archive(
        format!("spark-{}-scripts.zip", engine.as_str()),
        out,
        warnings,
    )
}

/// The presence, name and code checks shared by single files and bundle entries.
fn checked(
    code: Option<String>,
    name: Option<String>,
    engine: Engine,
    prefix: &str,
) -> Result<(ScriptName, String), ExportError> {
    let code = code.ok_or_else(|| invalid(format!("{prefix}code is required")))?;
    if code.trim().is_empty() {
        return Err(invalid(format!("{prefix}code must not be empty")));
    }
    if code.contains('\0') {
        return Err(invalid(format!("{prefix}code must not contain NUL bytes")));
    }
    let raw = name.ok_or_else(|| invalid(format!("{prefix}scriptName is required")))?;
    let name = ScriptName::parse(&raw, engine).map_err(|why| invalid(format!("{prefix}{why}")))?;
    Ok((name, code))
}

/// The files one script becomes, with the engine's naming, plus warnings.
fn script_files(
    name: &ScriptName,
    code: &str,
    engine: Engine,
    warnings: &mut Vec<String>,
) -> Vec<OutFile> {
    warnings.extend(engine_warnings(name, code, engine));
    let stem = match engine.file_case() {
        FileCase::Pascal => name.as_str().to_owned(),
        FileCase::Snake => snake_case(name.as_str()),
    };
    if engine == Engine::Unreal {
        return match split_unreal(code, name.as_str()) {
            Some((header, source)) => vec![
                OutFile {
                    name: format!("{stem}.h"),
                    body: header,
                },
                OutFile {
                    name: format!("{stem}.cpp"),
                    body: source,
                },
            ],
            None => vec![OutFile {
                name: format!("{stem}.h"),
                body: with_final_newline(code),
            }],
        };
    }
    vec![OutFile {
        name: format!("{stem}.{}", engine.extension()),
        body: with_final_newline(code),
    }]
}

fn with_final_newline(code: &str) -> String {
    let mut s = code.to_owned();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

static FILE_MARKER: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^\s*//\s*([A-Za-z_][A-Za-z0-9_]*)\.(h|hpp|cpp|cc|cxx)\s*$").ok());

/// Splits Unreal code into (header, source): by the `// Name.h` / `// Name.cpp` lines that open
/// each part, or failing that at the `#include "Name.h"` line that starts the source part.
/// `None` when there is no source part (a header alone).
fn split_unreal(code: &str, name: &str) -> Option<(String, String)> {
    let lines: Vec<&str> = code.lines().collect();
    let marker = |l: &str| {
        FILE_MARKER
            .as_ref()?
            .captures(l)
            .map(|c| c.get(2).map_or("", |m| m.as_str()).to_owned())
    };
    let header_at = lines
        .iter()
        .position(|l| matches!(marker(l).as_deref(), Some("h" | "hpp")));
    let source_at = lines
        .iter()
        .position(|l| matches!(marker(l).as_deref(), Some("cpp" | "cc" | "cxx")));
    let join = |part: &[&str]| with_final_newline(part.join("\n").trim_matches('\n'));
    match (header_at, source_at) {
        (Some(h), Some(s)) if h < s => Some((join(&lines[h..s]), join(&lines[s..]))),
        (Some(h), Some(s)) => Some((join(&lines[h..]), join(&lines[s..h]))),
        (_, Some(s)) if s > 0 => Some((join(&lines[..s]), join(&lines[s..]))),
        _ => {
            // No markers: the source part starts at the include of this class's header, if
            // something (the header) comes before it.
            let include = format!("#include \"{name}.h\"");
            let at = lines.iter().position(|l| l.trim() == include)?;
            let before = lines[..at].iter().any(|l| !l.trim().is_empty());
            before.then(|| (join(&lines[..at]), join(&lines[at..])))
        }
    }
}

static CS_EDITOR_USING: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?m)^\s*using\s+UnityEditor(?:\.[\w.]+)?\s*;").ok());
static UE_CLASS_DECL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?m)^\s*class\s+(?:[A-Z0-9_]+_API\s+)?([A-Za-z_]\w*)\s*(?::\s*public\s+([A-Za-z_]\w*))?",
    )
    .ok()
});

/// What the engine would reject or trip over, as human sentences.
fn engine_warnings(name: &ScriptName, code: &str, engine: Engine) -> Vec<String> {
    let mut w = Vec::new();
    let declared = detect_script_name(code, engine);
    match engine {
        Engine::Unity => {
            let is_behaviour = code.contains("MonoBehaviour");
            match &declared {
                None => w.push("no class declaration found in the C# code".to_owned()),
                Some(class) if class != name.as_str() && is_behaviour => w.push(format!(
                    "class {class} differs from scriptName {}: Unity requires a MonoBehaviour's class name to match its file name",
                    name.as_str()
                )),
                Some(class) if class != name.as_str() => w.push(format!(
                    "class {class} differs from scriptName {}",
                    name.as_str()
                )),
                Some(_) => {}
            }
            let editor_guarded = code.contains("#if UNITY_EDITOR");
            if CS_EDITOR_USING.as_ref().is_some_and(|r| r.is_match(code)) && !editor_guarded {
                w.push(
                    "the script uses the UnityEditor namespace outside #if UNITY_EDITOR; it will not build into a player"
                        .to_owned(),
                );
            }
        }
        Engine::Unreal => {
            if let Some(re) = UE_CLASS_DECL.as_ref() {
                for c in re.captures_iter(code) {
                    let class = c.get(1).map_or("", |m| m.as_str());
                    let base = c.get(2).map_or("", |m| m.as_str());
                    let expected = if base.starts_with('A') && base.len() > 1 {
                        Some('A')
                    } else if base.starts_with('U') && base.len() > 1 {
                        Some('U')
                    } else {
                        None
                    };
                    if let Some(prefix) = expected.filter(|p| !class.starts_with(*p)) {
                        w.push(format!(
                            "class {class} derives from {base} and needs the {prefix} prefix for UnrealHeaderTool"
                        ));
                    }
                }
            }
            match &declared {
                None => w.push("no UCLASS-style class declaration (A/U/F prefix) found".to_owned()),
                Some(class) if class != name.as_str() => w.push(format!(
                    "class {class} (without its prefix) differs from scriptName {}",
                    name.as_str()
                )),
                Some(_) => {}
            }
        }
        Engine::Godot | Engine::Phaser | Engine::Roblox | Engine::Love2d | Engine::Bevy => {
            if let Some(decl) = &declared {
                let matches = decl == name.as_str()
                    || (engine == Engine::Bevy && decl.trim_end_matches("Plugin") == name.as_str());
                if !matches {
                    w.push(format!(
                        "the code declares {decl}, which differs from scriptName {}",
                        name.as_str()
                    ));
                }
            }
        }
    }
    w
}

fn archive(
    file_name: String,
    files: Vec<OutFile>,
    warnings: Vec<String>,
) -> Result<Export, ExportError> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    let mut entries = Vec::with_capacity(files.len());
    for f in files {
        zip.start_file(f.name.as_str(), options)
            .map_err(|e| ExportError::Archive(e.to_string()))?;
        zip.write_all(f.body.as_bytes())
            .map_err(|e| ExportError::Archive(e.to_string()))?;
        entries.push(f.name);
    }
    let cursor = zip
        .finish()
        .map_err(|e| ExportError::Archive(e.to_string()))?;
    Ok(Export::Archive {
        file_name,
        body: cursor.into_inner(),
        entries,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(code: &str, name: &str, engine: &str) -> Result<Export, ExportError> {
        export(ExportParams {
            code: Some(code.into()),
            script_name: Some(name.into()),
            engine: Some(engine.into()),
            files: None,
        })
    }

    #[test]
    fn unreal_splits_by_file_markers_or_by_the_include() {
        let marked = "// Door.h\n#pragma once\nclass MYGAME_API ADoor : public AActor {};\n// Door.cpp\n#include \"Door.h\"\nADoor::ADoor() {}\n";
        let (h, c) = split_unreal(marked, "Door").unwrap();
        assert!(h.starts_with("// Door.h") && h.contains("class MYGAME_API ADoor"));
        assert!(c.starts_with("// Door.cpp") && c.contains("ADoor::ADoor()"));

        let by_include = "#pragma once\nclass ADoor : public AActor {};\n\n#include \"Door.h\"\nADoor::ADoor() {}";
        let (h, c) = split_unreal(by_include, "Door").unwrap();
        assert_eq!(h, "#pragma once\nclass ADoor : public AActor {};\n");
        assert_eq!(c, "#include \"Door.h\"\nADoor::ADoor() {}\n");

        assert!(split_unreal("#pragma once\nclass ADoor : public AActor {};", "Door").is_none());
        // A source file that only includes its header has nothing before the include.
        assert!(split_unreal("#include \"Door.h\"\nvoid f() {}", "Door").is_none());
    }

    #[test]
    fn warnings_name_what_the_engine_would_reject() {
        let Ok(Export::File { warnings, .. }) = single(
            "using UnityEngine;\nusing UnityEditor;\npublic class Door : MonoBehaviour {}",
            "Gate",
            "unity",
        ) else {
            panic!("expected a file");
        };
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("class Door differs from scriptName Gate"));
        assert!(warnings[1].contains("UnityEditor"));

        let Ok(Export::File { warnings, .. }) = single(
            "UCLASS()\nclass MYGAME_API Door : public AActor\n{\n};",
            "Door",
            "unreal",
        ) else {
            panic!("expected a file");
        };
        assert!(
            warnings.iter().any(|w| w.contains("needs the A prefix")),
            "{warnings:?}"
        );

        let Ok(Export::File { warnings, .. }) = single("print('hi')", "Hello", "unity") else {
            panic!("expected a file");
        };
        assert_eq!(
            warnings,
            vec!["no class declaration found in the C# code".to_owned()]
        );
    }

    #[test]
    fn bundles_refuse_duplicates_and_mixing_with_a_single_file() {
        let dup = export(ExportParams {
            engine: Some("unity".into()),
            files: Some(vec![
                FileParams {
                    code: Some("class A {}".into()),
                    script_name: Some("A".into()),
                },
                FileParams {
                    code: Some("class a {}".into()),
                    script_name: Some("a".into()),
                },
            ]),
            ..Default::default()
        });
        assert!(matches!(dup, Err(ExportError::Invalid(m)) if m.contains("both be named")));
        let mixed = export(ExportParams {
            code: Some("x".into()),
            files: Some(vec![]),
            ..Default::default()
        });
        assert!(mixed.is_err());
        let empty = export(ExportParams {
            files: Some(vec![]),
            ..Default::default()
        });
        assert!(matches!(empty, Err(ExportError::Invalid(m)) if m.contains("at least one")));
    }
}
