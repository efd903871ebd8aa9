//! The simulator's answers: code named as the prompt asks, deterministic, cut at stop
//! sequences, and failing as overloaded when told to.

use super::*;
use crate::engine::detect_script_name;
use crate::generate::extract_code;

#[test]
fn every_engine_answer_extracts_to_code_whose_name_matches_the_prompt() {
    for engine in Engine::ALL {
        let text = answer(engine, "Create a player controller with double jump");
        let extracted = extract_code(&text, engine);
        assert!(
            extracted.warnings.is_empty(),
            "{engine}: {:?}",
            extracted.warnings
        );
        let name = detect_script_name(&extracted.code, engine);
        let expected = if engine == Engine::Bevy {
            "PlayerControllerPlugin"
        } else {
            "PlayerController"
        };
        assert_eq!(name.as_deref(), Some(expected), "{engine}");
    }
}

#[test]
fn answers_are_deterministic_and_double_jump_shows() {
    let a = answer(Engine::Unity, "player controller with double jump");
    assert_eq!(
        a,
        answer(Engine::Unity, "player controller with double jump")
    );
    assert!(a.contains("maxJumps = 2"));
    assert!(answer(Engine::Unity, "player controller").contains("maxJumps = 1"));
}

#[tokio::test]
async fn the_answer_ends_before_the_first_stop_sequence_it_would_hold() {
    let sim = Simulator::new(Duration::ZERO, 0.0);
    let mut req = CompletionRequest {
        model: SIMULATOR_MODEL.into(),
        system: String::new(),
        prompt: "player controller".into(),
        max_tokens: 100,
        temperature: None,
        stop: vec![
            "never appears".into(),
            "MonoBehaviour".into(),
            "using".into(),
        ],
        engine: Engine::Unity,
        timeout: Duration::from_secs(1),
    };
    let full = answer(Engine::Unity, "player controller");
    let first = full
        .find("using")
        .unwrap()
        .min(full.find("MonoBehaviour").unwrap());
    let c = sim.complete(&req).await.unwrap();
    assert_eq!(c.text, full[..first]);
    assert!(c.stop_sequence.is_some());
    req.stop.clear();
    let c = sim.complete(&req).await.unwrap();
    assert_eq!((c.text, c.stop_sequence), (full, None));
}

#[tokio::test]
async fn failure_rate_one_always_fails_as_overloaded() {
    let sim = Simulator::new(Duration::ZERO, 1.0);
    let req = CompletionRequest {
        model: SIMULATOR_MODEL.into(),
        system: String::new(),
        prompt: "x".into(),
        max_tokens: 10,
        temperature: None,
        stop: Vec::new(),
        engine: Engine::Godot,
        timeout: Duration::from_secs(1),
    };
    let err = sim.complete(&req).await.unwrap_err();
    assert_eq!(err.status(), Some(529));
    assert!(err.is_retryable());
}
