//! The built-in simulator: a real [`Provider`] with no network.
//!
//! It lets the gateway run out of the box with no provider key, and lets breaker, fallback and
//! load tests rehearse outages: answers take `SPARK_SIMULATOR_LATENCY` and a share
//! `SPARK_SIMULATOR_FAILURE_RATE` of them fail as an overloaded upstream would. The answer is
//! deterministic for a given prompt and engine — an engine-aware template in the same Markdown
//! shape a real model produces — so caching and extraction behave exactly as in production.

use std::time::Duration;

use async_trait::async_trait;

use super::{
    Completion, CompletionRequest, CompletionStream, Provider, ProviderError, ProviderId,
    StreamEvent, Usage,
};
use crate::engine::{Engine, name_from_prompt};

pub const SIMULATOR_MODEL: &str = "spark-simulator-1";

pub struct Simulator {
    latency: Duration,
    failure_rate: f64,
    models: Vec<String>,
}

impl Simulator {
    pub fn new(latency: Duration, failure_rate: f64) -> Self {
        Simulator {
            latency,
            failure_rate,
            models: vec![SIMULATOR_MODEL.to_owned()],
        }
    }
}

#[async_trait]
impl Provider for Simulator {
    fn id(&self) -> ProviderId {
        ProviderId::Simulator
    }

    fn models(&self) -> &[String] {
        &self.models
    }

    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.failure_rate > 0.0 && rand::random::<f64>() < self.failure_rate {
            return Err(ProviderError::Status {
                provider: ProviderId::Simulator,
                status: 529,
                kind: "simulated_overload".into(),
                retry_after: None,
            });
        }
        let mut text = answer(req.engine, &req.prompt);
        // Like a real model: the answer ends where the first stop sequence would appear.
        let mut stop_sequence = None;
        if let Some((at, seq)) = req
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at)
        {
            text.truncate(at);
            stop_sequence = Some(seq.clone());
        }
        let usage = Usage {
            input_tokens: token_estimate(&req.system) + token_estimate(&req.prompt),
            output_tokens: token_estimate(&text).min(u64::from(req.max_tokens)),
        };
        Ok(Completion {
            text,
            model: SIMULATOR_MODEL.to_owned(),
            usage,
            truncated: false,
            stop_sequence,
        })
    }

    /// The same answer as [`Provider::complete`], in chunks of about 48 characters (split on
    /// character boundaries), then `Finished`.
    async fn stream(&self, req: &CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let c = self.complete(req).await?;
        let chars: Vec<char> = c.text.chars().collect();
        let mut items: Vec<Result<StreamEvent, ProviderError>> = chars
            .chunks(48)
            .map(|chunk| Ok(StreamEvent::Delta(chunk.iter().collect())))
            .collect();
        items.push(Ok(StreamEvent::Finished {
            model: c.model,
            usage: c.usage,
            truncated: c.truncated,
            stop_sequence: c.stop_sequence,
        }));
        Ok(Box::pin(futures_util::stream::iter(items)))
    }
}

/// About four characters a token, as the providers' own rules of thumb say. Also the
/// Anthropic-compatible `count_tokens` estimate.
pub fn token_estimate(s: &str) -> u64 {
    (s.chars().count() as u64).div_ceil(4)
}

/// The full answer text, Markdown and all.
pub fn answer(engine: Engine, prompt: &str) -> String {
    let name = name_from_prompt(prompt).unwrap_or_else(|| "GameScript".to_owned());
    let lower = prompt.to_lowercase();
    let movement = [
        "controller",
        "movement",
        "move",
        "jump",
        "player",
        "character",
    ]
    .iter()
    .any(|w| lower.contains(w));
    let double_jump = lower.contains("double jump") || lower.contains("double-jump");
    let code = match engine {
        Engine::Unity => unity(&name, movement, double_jump),
        Engine::Unreal => unreal(&name),
        Engine::Godot => godot(&name, movement),
        Engine::Roblox => roblox(&name),
        Engine::Phaser => phaser(&name),
        Engine::Bevy => bevy(&name),
        Engine::Love2d => love2d(&name),
    };
    if engine == Engine::Unreal {
        return format!("Here is the {name} actor, as a header and a source file.\n\n{code}");
    }
    format!(
        "Here is the {name} script for {engine}.\n\n```{lang}\n{code}```\n",
        lang = engine.language()
    )
}

fn unity(name: &str, movement: bool, double_jump: bool) -> String {
    if !movement {
        return format!(
            r#"using UnityEngine;

public class {name} : MonoBehaviour
{{
    [SerializeField] private float interval = 1f;

    private float elapsed;

    private void Update()
    {{
        elapsed += Time.deltaTime;
        if (elapsed >= interval)
        {{
            elapsed = 0f;
            Tick();
        }}
    }}

    private void Tick()
    {{
        Debug.Log($"{{name}} ticked at {{Time.time:F2}}s");
    }}
}}
"#
        );
    }
    let jumps = if double_jump { 2 } else { 1 };
    format!(
        r#"using UnityEngine;

[RequireComponent(typeof(Rigidbody))]
public class {name} : MonoBehaviour
{{
    [SerializeField] private float moveSpeed = 6f;
    [SerializeField] private float jumpForce = 7f;
    [SerializeField] private int maxJumps = {jumps};
    [SerializeField] private LayerMask groundMask = ~0;

    private Rigidbody body;
    private Vector3 input;
    private int jumpsLeft;
    private bool jumpRequested;

    private void Awake()
    {{
        body = GetComponent<Rigidbody>();
        jumpsLeft = maxJumps;
    }}

    private void Update()
    {{
        input = new Vector3(Input.GetAxisRaw("Horizontal"), 0f, Input.GetAxisRaw("Vertical")).normalized;
        if (Input.GetButtonDown("Jump") && jumpsLeft > 0)
        {{
            jumpRequested = true;
        }}
    }}

    private void FixedUpdate()
    {{
        if (IsGrounded() && body.linearVelocity.y <= 0f)
        {{
            jumpsLeft = maxJumps;
        }}

        Vector3 velocity = input * moveSpeed;
        velocity.y = body.linearVelocity.y;

        if (jumpRequested)
        {{
            velocity.y = jumpForce;
            jumpsLeft--;
            jumpRequested = false;
        }}

        body.linearVelocity = velocity;
    }}

    private bool IsGrounded()
    {{
        return Physics.Raycast(transform.position, Vector3.down, 1.1f, groundMask);
    }}
}}
"#
    )
}

fn unreal(name: &str) -> String {
    format!(
        r#"```cpp
// {name}.h
#pragma once

#include "CoreMinimal.h"
#include "GameFramework/Actor.h"
#include "{name}.generated.h"

UCLASS()
class MYPROJECT_API A{name} : public AActor
{{
    GENERATED_BODY()

public:
    A{name}();

    virtual void Tick(float DeltaTime) override;

protected:
    virtual void BeginPlay() override;

    UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "{name}")
    float Speed = 100.f;
}};
```

```cpp
// {name}.cpp
#include "{name}.h"

A{name}::A{name}()
{{
    PrimaryActorTick.bCanEverTick = true;
}}

void A{name}::BeginPlay()
{{
    Super::BeginPlay();
}}

void A{name}::Tick(float DeltaTime)
{{
    Super::Tick(DeltaTime);
    AddActorWorldOffset(GetActorForwardVector() * Speed * DeltaTime);
}}
```
"#
    )
}

fn godot(name: &str, movement: bool) -> String {
    if movement {
        return format!(
            r#"extends CharacterBody2D
class_name {name}

@export var speed: float = 220.0
@export var jump_velocity: float = -420.0

var gravity: float = ProjectSettings.get_setting("physics/2d/default_gravity")


func _physics_process(delta: float) -> void:
	if not is_on_floor():
		velocity.y += gravity * delta
	if Input.is_action_just_pressed("ui_accept") and is_on_floor():
		velocity.y = jump_velocity
	var direction := Input.get_axis("ui_left", "ui_right")
	velocity.x = direction * speed
	move_and_slide()
"#
        );
    }
    format!(
        r#"extends Node
class_name {name}

signal ticked(count: int)

@export var interval: float = 1.0

var _elapsed: float = 0.0
var _count: int = 0


func _process(delta: float) -> void:
	_elapsed += delta
	if _elapsed >= interval:
		_elapsed = 0.0
		_count += 1
		ticked.emit(_count)
"#
    )
}

fn roblox(name: &str) -> String {
    format!(
        r#"--!strict
local RunService = game:GetService("RunService")

local {name} = {{}}
{name}.__index = {name}

export type {name} = typeof(setmetatable({{}} :: {{ elapsed: number, connection: RBXScriptConnection? }}, {name}))

function {name}.new(): {name}
	local self = setmetatable({{ elapsed = 0, connection = nil }}, {name})
	self.connection = RunService.Heartbeat:Connect(function(dt: number)
		self.elapsed += dt
	end)
	return self
end

function {name}:Destroy()
	if self.connection then
		self.connection:Disconnect()
		self.connection = nil
	end
end

return {name}
"#
    )
}

fn phaser(name: &str) -> String {
    format!(
        r#"import Phaser from 'phaser';

export default class {name} extends Phaser.Scene {{
  private player!: Phaser.Types.Physics.Arcade.SpriteWithDynamicBody;
  private cursors!: Phaser.Types.Input.Keyboard.CursorKeys;

  constructor() {{
    super({{ key: '{name}' }});
  }}

  create(): void {{
    this.player = this.physics.add.sprite(100, 100, 'player');
    this.player.setCollideWorldBounds(true);
    const keyboard = this.input.keyboard;
    if (keyboard) {{
      this.cursors = keyboard.createCursorKeys();
    }}
  }}

  update(): void {{
    const speed = 200;
    this.player.setVelocityX(
      this.cursors.left.isDown ? -speed : this.cursors.right.isDown ? speed : 0,
    );
    if (this.cursors.up.isDown && this.player.body.blocked.down) {{
      this.player.setVelocityY(-400);
    }}
  }}
}}
"#
    )
}

fn bevy(name: &str) -> String {
    format!(
        r#"use bevy::prelude::*;

#[derive(Component)]
pub struct Speed(pub f32);

pub struct {name}Plugin;

impl Plugin for {name}Plugin {{
    fn build(&self, app: &mut App) {{
        app.add_systems(Update, move_with_keys);
    }}
}}

fn move_with_keys(
    keys: Res<ButtonInput<KeyCode>>,
    time: Res<Time>,
    mut query: Query<(&Speed, &mut Transform)>,
) {{
    let mut direction = Vec3::ZERO;
    if keys.pressed(KeyCode::ArrowLeft) {{
        direction.x -= 1.0;
    }}
    if keys.pressed(KeyCode::ArrowRight) {{
        direction.x += 1.0;
    }}
    for (speed, mut transform) in &mut query {{
        transform.translation += direction * speed.0 * time.delta_secs();
    }}
}}
"#
    )
}

fn love2d(name: &str) -> String {
    format!(
        r#"local {name} = {{}}
{name}.__index = {name}

function {name}.new(x, y)
  local self = setmetatable({{}}, {name})
  self.x, self.y = x or 0, y or 0
  self.speed = 180
  return self
end

function {name}:update(dt)
  if love.keyboard.isDown("left") then self.x = self.x - self.speed * dt end
  if love.keyboard.isDown("right") then self.x = self.x + self.speed * dt end
end

function {name}:draw()
  love.graphics.rectangle("fill", self.x, self.y, 32, 32)
end

return {name}
"#
    )
}

#[cfg(test)]
mod tests;
