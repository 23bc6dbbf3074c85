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
