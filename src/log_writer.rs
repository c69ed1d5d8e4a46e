//! Log output that costs a request one short, uncontended lock and a copy: lines are appended to
//! a shared buffer that a background thread writes out in batches, every [`FLUSH_EVERY`] or as
//! soon as [`FLUSH_AT`] bytes are waiting. No request ever waits on the terminal or the log
//! collector, and no line wakes another thread (the per-line hand-off of a channel-based writer
//! costs more than formatting the line). Past [`MAX_PENDING`] bytes waiting, lines are dropped and
//! the loss is reported on the next write. The same trade as nginx's `access_log … buffer=`:
//! a process killed outright loses at most the last [`FLUSH_EVERY`] of lines.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest a line waits before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Bytes waiting that trigger a write right away.
pub const FLUSH_AT: usize = 64 * 1024;
/// Pause after each write, so lines arriving meanwhile go out together.
const BATCH_PAUSE: Duration = Duration::from_millis(5);
/// Bytes waiting beyond which new lines are dropped (the output is not keeping up).
pub const MAX_PENDING: usize = 4 * 1024 * 1024;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the buffer inconsistent (appends only).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer handed to the log formatter; cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Flushes what is waiting and stops the background thread when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the background thread that writes batches to `out`.
pub fn batched<W: Write + Send + 'static>(out: W) -> std::io::Result<(BatchWriter, FlushGuard)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
    });
    let worker = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("jwtgate-log".into())
        .spawn(move || write_batches(&worker, out))?;
    Ok((
        BatchWriter {
            shared: Arc::clone(&shared),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::with_capacity(FLUSH_AT);
    loop {
        let closed = {
            let mut state = shared.lock();
            if state.pending.is_empty() && !state.closed {
                state = shared
                    .wake
                    .wait_timeout(state, FLUSH_EVERY)
                    .map(|(s, _)| s)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            std::mem::swap(&mut state.pending, &mut batch);
            state.closed
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "jwtgate: {dropped} log line(s) dropped: the log output did not keep up"
            );
        }
        if !batch.is_empty() {
            // Nowhere to report a failing log output; the lines are lost either way.
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
            // Do not keep a burst's worth of memory around.
            batch.shrink_to(FLUSH_AT);
        }
        if closed && shared.lock().pending.is_empty() {
            return;
        }
        if !closed {
            // Batch what arrives in the meantime rather than waking per line.
            std::thread::sleep(BATCH_PAUSE);
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        if state.pending.len() + line.len() > MAX_PENDING {
            drop(state);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        let before = state.pending.len();
        state.pending.extend_from_slice(line);
        // Wake the writer once, when the threshold is crossed (a notify is a system call).
        let crossed = before < FLUSH_AT && state.pending.len() >= FLUSH_AT;
        drop(state);
        if crossed {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_the_guard_flushes_the_rest() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        w.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 4000);
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..1000).collect::<Vec<_>>(), "thread {t}");
        }
    }

    #[test]
    fn lines_are_written_without_waiting_for_more() {
        let sink = Sink::default();
        let (mut writer, _guard) = batched(sink.clone()).unwrap();
        writer.write_all(b"one line\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"one line\n");
    }

    /// An output that blocks until the test lets it go.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>, Sink);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.1.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_costs_dropped_lines_never_a_blocked_writer() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let (mut writer, guard) = batched(Stuck(Arc::clone(&gate), sink.clone())).unwrap();
        // Fill the first batch so the thread is stuck writing it, then write far past the cap.
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        for _ in 0..(3 * MAX_PENDING / line.len()) {
            writer.write_all(&line).unwrap();
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("log line(s) dropped"), "loss is reported");
        assert!(
            text.len() <= 2 * MAX_PENDING + 1024,
            "bounded: {}",
            text.len()
        );
    }
}
