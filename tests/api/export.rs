//! `POST /api/export`: one test per engine, bundles, the Unreal split, and hostile input.

use std::io::Read;

use serde_json::{Value, json};

use crate::helpers::*;

async fn post_export(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/export"))
        .header("x-api-key", ALICE_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn unzip(bytes: &[u8]) -> Vec<(String, String)> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut f = archive.by_index(i).unwrap();
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            (f.name().unwrap().to_string(), s)
        })
        .collect()
}

const UNITY: &str = "using UnityEngine;\n\n[RequireComponent(typeof(Rigidbody))]\npublic class PlayerController : MonoBehaviour\n{\n    [SerializeField] private float speed = 6f;\n    private Rigidbody body;\n\n    private void Awake() => body = GetComponent<Rigidbody>();\n\n    private void FixedUpdate()\n    {\n        var input = new Vector3(Input.GetAxis(\"Horizontal\"), 0f, Input.GetAxis(\"Vertical\"));\n        body.linearVelocity = input * speed;\n    }\n}\n";
const UNREAL_HEADER: &str = "#pragma once\n\n#include \"CoreMinimal.h\"\n#include \"GameFramework/Actor.h\"\n#include \"Door.generated.h\"\n\nUCLASS()\nclass MYGAME_API ADoor : public AActor\n{\n    GENERATED_BODY()\npublic:\n    UPROPERTY(EditAnywhere)\n    float OpenAngle = 90.f;\n};\n";
const GODOT: &str = "extends CharacterBody2D\nclass_name PlayerController\n\n@export var speed: float = 200.0\n\nfunc _physics_process(_delta: float) -> void:\n\tvelocity.x = Input.get_axis(\"ui_left\", \"ui_right\") * speed\n\tmove_and_slide()\n";
const ROBLOX: &str = "--!strict\nlocal Inventory = {}\nInventory.__index = Inventory\n\nfunction Inventory.new()\n\treturn setmetatable({ items = {} }, Inventory)\nend\n\nreturn Inventory\n";
const PHASER: &str = "import Phaser from 'phaser';\n\nexport default class MainScene extends Phaser.Scene {\n  constructor() {\n    super({ key: 'MainScene' });\n  }\n\n  create(): void {\n    this.add.text(10, 10, 'Hello');\n  }\n}\n";
const BEVY: &str = "use bevy::prelude::*;\n\npub struct CombatPlugin;\n\nimpl Plugin for CombatPlugin {\n    fn build(&self, app: &mut App) {\n        app.add_systems(Update, tick);\n    }\n}\n\nfn tick() {}\n";
const LOVE: &str = "local Player = {}\nPlayer.__index = Player\n\nfunction Player.new(x, y)\n  return setmetatable({ x = x, y = y }, Player)\nend\n\nreturn Player\n";

#[tokio::test]
async fn each_engine_exports_a_file_with_its_name_type_disposition_and_exact_body() {
    let app = spawn_app().await;
    let cases = [
        ("unity", "PlayerController", UNITY, "PlayerController.cs"),
        ("unreal", "Door", UNREAL_HEADER, "Door.h"),
        ("godot", "PlayerController", GODOT, "player_controller.gd"),
        ("roblox", "Inventory", ROBLOX, "Inventory.luau"),
        ("phaser", "MainScene", PHASER, "MainScene.ts"),
        ("bevy", "Combat", BEVY, "combat.rs"),
        ("love2d", "Player", LOVE, "player.lua"),
    ];
    for (engine, name, code, file) in cases {
        let resp = post_export(
            &app,
            &json!({"code": code, "scriptName": name, "engine": engine}),
        )
        .await;
        assert_eq!(resp.status(), 200, "{engine}");
        assert_eq!(
            resp.headers()["content-type"],
            "text/plain; charset=utf-8",
            "{engine}"
        );
        assert_eq!(
            resp.headers()["content-disposition"],
            format!("attachment; filename=\"{file}\"").as_str(),
            "{engine}"
        );
        assert!(
            resp.headers().get("x-spark-warnings").is_none(),
            "{engine}: {:?}",
            resp.headers().get("x-spark-warnings")
        );
        assert!(!resp.headers()["x-request-id"].is_empty());
        assert_eq!(resp.bytes().await.unwrap(), code.as_bytes(), "{engine}");
    }
}

#[tokio::test]
async fn a_bundle_is_a_zip_with_every_file_and_unreal_code_is_split() {
    let app = spawn_app().await;
    let resp = post_export(
        &app,
        &json!({"engine": "unity", "files": [
            {"code": UNITY, "scriptName": "PlayerController"},
            {"code": "using UnityEngine;\npublic class Coin : MonoBehaviour {}\n", "scriptName": "Coin"}
        ]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/zip");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"spark-unity-scripts.zip\""
    );
    let files = unzip(&resp.bytes().await.unwrap());
    assert_eq!(
        files,
        vec![
            ("PlayerController.cs".to_owned(), UNITY.to_owned()),
            (
                "Coin.cs".to_owned(),
                "using UnityEngine;\npublic class Coin : MonoBehaviour {}\n".to_owned()
            ),
        ]
    );

    let header = "// Door.h\n#pragma once\n#include \"Door.generated.h\"\nUCLASS()\nclass MYGAME_API ADoor : public AActor\n{\n    GENERATED_BODY()\n};";
    let source = "// Door.cpp\n#include \"Door.h\"\n\nADoor::ADoor() {}";
    let resp = post_export(
        &app,
        &json!({"code": format!("{header}\n\n{source}\n"), "scriptName": "Door", "engine": "unreal"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/zip");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"Door.zip\""
    );
    let files = unzip(&resp.bytes().await.unwrap());
    assert_eq!(
        files,
        vec![
            ("Door.h".to_owned(), format!("{header}\n")),
            ("Door.cpp".to_owned(), format!("{source}\n")),
        ]
    );
}

#[tokio::test]
async fn warnings_travel_in_x_spark_warnings() {
    let app = spawn_app().await;
    let resp = post_export(
        &app,
        &json!({"code": "using UnityEditor;\npublic class Door : MonoBehaviour {}\n", "scriptName": "Gate"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let w = resp.headers()["x-spark-warnings"].to_str().unwrap();
    assert!(w.contains("class Door differs from scriptName Gate"), "{w}");
    assert!(w.contains("UnityEditor"), "{w}");
}

/// Issue 16, finding 8: a bundle of many mismatched scripts keeps the header small.
#[tokio::test]
async fn the_warnings_header_stays_bounded_for_a_large_bundle() {
    let app = spawn_app().await;
    let files: Vec<_> = (0..50)
        .map(|i| {
            json!({"code": format!("using UnityEditor;\npublic class Door{i} : MonoBehaviour {{}}\n"),
                   "scriptName": format!("Gate{i}")})
        })
        .collect();
    let resp = post_export(&app, &json!({"files": files})).await;
    assert_eq!(resp.status(), 200);
    let w = resp.headers()["x-spark-warnings"].to_str().unwrap();
    assert!(w.len() <= 4096, "{} bytes", w.len());
    assert!(w.ends_with(" more"), "{w}");
    assert!(w.matches("differs from scriptName").count() <= 10, "{w}");
}

#[tokio::test]
async fn a_unicode_name_gets_an_rfc_5987_filename_star() {
    let app = spawn_app().await;
    let resp = post_export(
        &app,
        &json!({"code": "public class Spieler_Übung : UnityEngine.MonoBehaviour {}\n", "scriptName": "Spieler_Übung"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"Spieler__bung.cs\"; filename*=UTF-8''Spieler_%C3%9Cbung.cs"
    );
}

#[tokio::test]
async fn hostile_input_is_400_and_never_reaches_a_header() {
    let app = spawn_app().await;
    let names = [
        "../../etc/passwd",
        "..\\..\\windows\\system32",
        "Player/Controller",
        "Evil\r\nSet-Cookie: session=1",
        "Tab\tName",
        "Quote\"Name",
        "CON",
        "nul",
        "COM1",
        "LPT1",
        "class",
        "1Player",
        &"A".repeat(500),
        "",
    ];
    for name in names {
        let resp = post_export(&app, &json!({"code": "class A {}", "scriptName": name})).await;
        let headers: Vec<String> = resp
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        let body = assert_error(resp, 400, "invalid_request").await;
        if !name.is_empty() {
            for h in &headers {
                assert!(!h.contains(name), "{name:?} reached a header: {h}");
            }
            // Names with markup or separators are not echoed in the message either.
            if name.chars().any(|c| !c.is_alphanumeric()) {
                let escaped = serde_json::to_string(name).unwrap();
                assert!(
                    !body.to_string().contains(escaped.trim_matches('"')),
                    "{name:?} echoed in the body"
                );
            }
        }
    }
    for (body, what) in [
        (json!({"code": "", "scriptName": "A"}), "empty code"),
        (json!({"code": "   \n", "scriptName": "A"}), "blank code"),
        (
            json!({"code": "class A {}\u{0000}", "scriptName": "A"}),
            "NUL byte",
        ),
        (json!({"scriptName": "A"}), "missing code"),
        (json!({"code": "class A {}"}), "missing name"),
        (
            json!({"code": "x", "scriptName": "A", "engine": "cryengine"}),
            "unknown engine",
        ),
        (
            json!({"files": [{"code": "x", "scriptName": "../A"}]}),
            "hostile bundle entry",
        ),
    ] {
        let resp = post_export(&app, &body).await;
        assert_error(resp, 400, "invalid_request").await;
        let _ = what;
    }
}

#[tokio::test]
async fn a_body_over_512_kib_is_413_and_export_needs_a_key() {
    let app = spawn_app().await;
    let big = json!({"code": "a".repeat(600 * 1024), "scriptName": "Big"});
    let resp = post_export(&app, &big).await;
    let err = assert_error(resp, 413, "payload_too_large").await;
    assert_eq!(err["error"]["details"]["maxBytes"], 512 * 1024);

    let resp = app
        .client
        .post(app.url("/api/export"))
        .json(&json!({"code": "class A {}", "scriptName": "A"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;

    let m = app.metrics().await;
    assert!(m.contains("api_export_total{status=\"413\"} 1"), "{m}");
    assert!(m.contains("api_export_total{status=\"401\"} 1"));
    assert!(m.contains("api_export_duration_seconds_count 2"));
}
