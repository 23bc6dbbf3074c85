//! Log output that costs a busy gateway little: each thread appends its
//! formatted lines to a buffer of its own (one of a few shards, each behind
//! its own lock, so threads do not wait on each other), and the buffers go
//! to stderr in batches: when one fills, and from a flusher thread every
//! [`FLUSH_EVERY`]. One `write(2)` then carries many lines instead of one.
//! Lines of one thread stay in order; lines of different threads may
//! interleave by batch (each line carries its own timestamp).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Longest a line waits in a buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A buffer this full is written out at once by the thread that filled it.
const BATCH_BYTES: usize = 32 * 1024;
const SHARDS: usize = 16;

struct Shards {
    buffers: Vec<Mutex<Vec<u8>>>,
    stopping: AtomicBool,
}

impl Shards {
    fn flush_all(&self) {
        for shard in &self.buffers {
            let batch = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
            write_out(&batch);
        }
    }
}

fn write_out(batch: &[u8]) {
    if !batch.is_empty() {
        // Nowhere to report a failure to write the log itself.
        let _ = io::stderr().write_all(batch);
    }
}

/// The `MakeWriter` handed to tracing-subscriber.
#[derive(Clone)]
pub struct BatchedStderr {
    shards: Arc<Shards>,
}

/// Flushes everything and stops the flusher when dropped: keep it alive
/// for as long as the program logs.
pub struct FlushGuard {
    shards: Arc<Shards>,
    flusher: Option<JoinHandle<()>>,
}

pub fn batched_stderr() -> (BatchedStderr, FlushGuard) {
    let shards = Arc::new(Shards {
        buffers: (0..SHARDS)
            .map(|_| Mutex::new(Vec::with_capacity(BATCH_BYTES)))
            .collect(),
        stopping: AtomicBool::new(false),
    });
    let flusher = std::thread::Builder::new()
        .name("authgate-log".into())
        .spawn({
            let shards = shards.clone();
            move || {
                while !shards.stopping.load(Ordering::Acquire) {
                    std::thread::park_timeout(FLUSH_EVERY);
                    shards.flush_all();
                }
            }
        })
        .expect("a thread can be started");
    (
        BatchedStderr {
            shards: shards.clone(),
        },
        FlushGuard {
            shards,
            flusher: Some(flusher),
        },
    )
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shards.stopping.store(true, Ordering::Release);
        if let Some(flusher) = self.flusher.take() {
            flusher.thread().unpark();
            let _ = flusher.join();
        }
        self.shards.flush_all();
    }
}

fn shard_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

pub struct ShardWriter<'a> {
    shards: &'a Shards,
}

impl Write for ShardWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shard = &self.shards.buffers[shard_of_this_thread()];
        let mut buffer = shard.lock().unwrap_or_else(|e| e.into_inner());
        buffer.extend_from_slice(line);
        if buffer.len() >= BATCH_BYTES {
            let batch = std::mem::replace(&mut *buffer, Vec::with_capacity(BATCH_BYTES));
            drop(buffer);
            write_out(&batch);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = ShardWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        ShardWriter {
            shards: &self.shards,
        }
    }
}

/// Field formatting for the human log format that no client-controlled
/// value can break out of. tracing's default writes `%`-formatted values
/// as they are, so a username with a newline in it could start a line of
/// its own, and one with a space and `=` could fake a field. Here a value
/// is written bare only when it is one plain word; anything else (and
/// every string value) is quoted with control characters escaped (`\n`,
/// `\u{1b}`), as Rust's `{:?}` does.
#[derive(Debug, Default, Clone, Copy)]
pub struct HumanFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for HumanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = HumanVisitor {
            writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct HumanVisitor<'w> {
    writer: tracing_subscriber::fmt::format::Writer<'w>,
    result: std::fmt::Result,
    first: bool,
}

/// One plain word: nothing that could end a line, separate fields or
/// look like another field.
fn is_bare_word(text: &str) -> bool {
    !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '"' | '=' | '\\'))
}

impl HumanVisitor<'_> {
    fn write(&mut self, field: &tracing::field::Field, text: &str, quote_always: bool) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let name = field.name();
        self.result = if name == "message" {
            // The gateway's own words; escaped all the same.
            write!(self.writer, "{separator}{}", text.escape_debug())
        } else if !quote_always && is_bare_word(text) {
            write!(self.writer, "{separator}{name}={text}")
        } else {
            write!(self.writer, "{separator}{name}={text:?}")
        };
    }
}

impl tracing::field::Visit for HumanVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.write(field, value, true);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        // The value is looked at before it is written; one buffer per
        // thread, reused, so a log line costs no allocation for it.
        thread_local! {
            static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        TEXT.with(|text| match text.try_borrow_mut() {
            Ok(mut text) => {
                text.clear();
                let _ = write!(text, "{value:?}");
                self.write(field, &text, false);
                if text.capacity() > 4096 {
                    *text = String::new();
                }
            }
            // Formatting the value logged something itself.
            Err(_) => self.write(field, &format!("{value:?}"), false),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything one event writes in the human format.
    fn human_line(event: impl FnOnce()) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let out = out.clone();
            move || Capture(out.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(HumanFields)
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        tracing::subscriber::with_default(subscriber, event);
        let bytes = out.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn client_values_cannot_start_a_line_or_fake_a_field() {
        let forged = "a\nINFO authgate::security: event=login_ok user=alice\r\u{1b}[2K";
        let line = human_line(|| {
            tracing::warn!(user = %forged, path = %"/a b=c", status = 401, event = "login_failed", "login failed");
        });
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        assert!(!line.contains('\r') && !line.contains('\u{1b}'), "{line:?}");
        assert!(
            line.contains(
                r#"user="a\nINFO authgate::security: event=login_ok user=alice\r\u{1b}[2K""#
            ),
            "{line}"
        );
        assert!(line.contains(r#"path="/a b=c""#), "{line}");
        assert!(line.contains("status=401 "), "{line}");
        assert!(line.contains(r#"event="login_failed""#), "{line}");
        let plain = human_line(|| tracing::info!(method = %"GET", path = %"/hello", "request"));
        assert!(plain.contains("request method=GET path=/hello"), "{plain}");
    }
}
