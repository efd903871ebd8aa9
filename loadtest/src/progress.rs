//! Live progress while a run measures: an indicatif bar on a terminal, one plain line a second
//! otherwise (CI logs and pipes get readable history instead of carriage-return noise).
//! Everything goes to stderr so `--json` output on stdout stays clean.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;

use crate::runner::{Live, Stop};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines,
    Off,
}

impl Mode {
    /// A bar on a terminal, lines otherwise, nothing when asked to be quiet.
    pub fn detect(quiet: bool) -> Self {
        if quiet {
            Mode::Off
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

fn status_line(live: &Live) -> String {
    let sent = live.sent.load(Ordering::Relaxed);
    let (done, errors, p99) = live.with_recorder(|r| (r.requests(), r.errors(), r.recent_p99()));
    let p99 = p99.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.3} ms", d.as_secs_f64() * 1000.0),
    );
    if sent == 0 {
        return "warming up".to_owned();
    }
    format!("sent {sent}, done {done}, errors {errors}, p99 last second {p99}")
}

/// Shows progress until the returned sender is dropped or fired.
pub fn spawn(
    mode: Mode,
    live: Arc<Live>,
    stop: Stop,
    warmup: Duration,
) -> Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    if mode == Mode::Off {
        return None;
    }
    let (tx, mut rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let bar = (mode == Mode::Bar).then(|| {
            let (len, unit) = match stop {
                Stop::After(d) => ((warmup + d).as_millis() as u64, "ms"),
                Stop::Requests(n) => (n, "requests"),
            };
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            let template =
                format!("{{elapsed_precise}} [{{bar:32}}] {{pos}}/{{len}} {unit}  {{msg}}");
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        let every = if bar.is_some() {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = &mut rx => break,
                _ = tick.tick() => {}
            }
            let line = status_line(&live);
            match &bar {
                Some(bar) => {
                    let pos = match stop {
                        Stop::After(_) => started.elapsed().as_millis() as u64,
                        Stop::Requests(_) => live.with_recorder(|r| r.requests()),
                    };
                    bar.set_position(pos);
                    bar.set_message(line);
                }
                None => eprintln!("[{:>4}s] {line}", started.elapsed().as_secs()),
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    });
    Some((tx, task))
}
