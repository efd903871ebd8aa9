//! The log writer: every thread's lines gathered in one bounded buffer, written by one thread in
//! batches.
//!
//! tracing-appender's non-blocking writer did this job with one channel message per line and a
//! receiver that spins (`sched_yield`) while it waits for the next; under load its thread took
//! 10–13% of the process's CPU on the cache-hit path, mostly yielding, on cores the request
//! workers needed (BENCHMARKS.md). Here a line is appended to a shared buffer under a mutex
//! held for a copy, the writer thread sleeps on a condition variable until the buffer stops
//! being empty, then takes everything queued at once and writes it in one call, and pauses
//! [`PAUSE`] before looking again (a wake-up per line cost more than the spinning it replaced).
//! A request never waits on the output (a slow pipe or log collector); past [`MAX_BUFFERED`]
//! bytes lines are dropped, counted, and the count is written as a line of its own once the
//! writer catches up.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Bytes waiting for the writer thread before new lines are dropped: about 50,000 request lines.
pub const MAX_BUFFERED: usize = 16 << 20;

#[derive(Default)]
struct State {
    queued: Vec<u8>,
    dropped: u64,
    closed: bool,
    /// The writer thread sleeps on the condition variable: only then is it worth a wake-up.
    waiting: bool,
}

/// After each write the thread pauses this long, so under load lines gather into batches and
/// appenders rarely need to wake it; a line waits at most this much longer to be written.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked while holding the lock left whole lines behind (the lock is
        // held only to append or to swap buffers), so the state is still good.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A handle that queues lines; cheap to clone, one per thread or per event.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
    max: usize,
    /// The writer thread could not start: lines go straight to stderr (slower, never lost).
    direct: bool,
}

/// Stops the writer thread after it has written everything queued.
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out`. If the thread cannot start, the handle writes to stderr
/// itself, and says so once.
pub fn start<W: Write + Send + 'static>(out: W) -> (LogWriter, LogWriterGuard) {
    start_bounded(out, MAX_BUFFERED)
}

fn start_bounded<W: Write + Send + 'static>(out: W, max: usize) -> (LogWriter, LogWriterGuard) {
    let shared = Arc::new(Shared::default());
    let thread = spawn(Arc::clone(&shared), out)
        .map_err(|e| eprintln!("the log writer thread could not start ({e}); logging directly"))
        .ok();
    (
        LogWriter {
            shared: Arc::clone(&shared),
            max,
            direct: thread.is_none(),
        },
        LogWriterGuard { shared, thread },
    )
}

fn spawn<W: Write + Send + 'static>(shared: Arc<Shared>, mut out: W) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("spark-log-writer".into())
        .spawn(move || {
            let mut batch = Vec::new();
            loop {
                let (dropped, closed) = {
                    let mut state = shared.lock();
                    while state.queued.is_empty() && state.dropped == 0 && !state.closed {
                        state.waiting = true;
                        state = shared
                            .ready
                            .wait(state)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    state.waiting = false;
                    // Swap, so the appenders keep a buffer that already has its capacity.
                    std::mem::swap(&mut batch, &mut state.queued);
                    (std::mem::take(&mut state.dropped), state.closed)
                };
                // Nothing to do about a failed write to stderr but to go on.
                let _ = out.write_all(&batch);
                if dropped > 0 {
                    let _ = writeln!(
                        out,
                        "{{\"level\":\"WARN\",\"message\":\"log lines dropped: the log output \
                         fell behind\",\"dropped\":{dropped},\"target\":\"spark_gateway::telemetry\"}}"
                    );
                }
                let _ = out.flush();
                batch.clear();
                if closed && shared.lock().queued.is_empty() {
                    return;
                }
                if !closed {
                    std::thread::sleep(PAUSE);
                }
            }
        })
}

impl Write for LogWriter {
    /// Queues all of `buf` (callers write one whole line at a time), or drops it when the queue
    /// is full; never blocks on the output.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.direct {
            return io::stderr().write(buf);
        }
        let wake = {
            let mut state = self.shared.lock();
            if state.queued.len() + buf.len() > self.max {
                state.dropped += 1;
                false
            } else {
                state.queued.extend_from_slice(buf);
                // One wake-up per sleep: later appenders see `waiting` cleared.
                std::mem::take(&mut state.waiting)
            }
        };
        if wake {
            self.shared.ready.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// An output that records what reaches it, and can be held shut until released.
    #[derive(Clone)]
    struct Sink {
        seen: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(gate) = self.gate.lock().unwrap().take() {
                let _ = gate.recv();
            }
            self.seen.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn sink(gated: bool) -> (Sink, Option<mpsc::Sender<()>>) {
        let (open, gate) = mpsc::channel();
        let s = Sink {
            seen: Arc::default(),
            gate: Arc::new(Mutex::new(gated.then_some(gate))),
        };
        (s, gated.then_some(open))
    }

    #[test]
    fn every_line_is_written_in_order_before_the_guard_returns() {
        let (out, _) = sink(false);
        let (writer, guard) = start(out.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        w.write_all(format!("t{t} line {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.seen.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 4000);
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let want: Vec<String> = (0..1000).map(|i| format!("t{t} line {i}")).collect();
            assert_eq!(mine, want, "thread {t}: whole lines, in order");
        }
    }

    #[test]
    fn a_stuck_output_drops_lines_past_the_bound_and_says_how_many() {
        let (out, open) = sink(true);
        let (mut writer, guard) = start_bounded(out.clone(), 100);
        // The first line wakes the writer, which takes it and then blocks in the stuck output.
        writer.write_all(b"first line\n").unwrap();
        while !writer.shared.lock().queued.is_empty() {
            std::thread::yield_now();
        }
        // Ten lines of 20 bytes: five fit the 100-byte bound, five are dropped.
        for i in 0..10 {
            writer
                .write_all(format!("queued line {i:06}\n").as_bytes())
                .unwrap();
        }
        assert!(writer.shared.lock().queued.len() <= 100);
        open.unwrap().send(()).unwrap();
        drop(guard);
        let text = String::from_utf8(out.seen.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "first line");
        assert_eq!(
            &lines[1..6],
            (0..5)
                .map(|i| format!("queued line {i:06}"))
                .collect::<Vec<_>>()
        );
        let note: serde_json::Value = serde_json::from_str(lines[6]).unwrap();
        assert_eq!(note["dropped"], 5);
        assert_eq!(lines.len(), 7);
    }
}
