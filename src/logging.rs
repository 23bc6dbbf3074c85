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
        // Pieces are written one by one rather than through `write!`: an
        // access line is written per request, and the formatting machinery
        // was the larger part of its cost (measured with callgrind).
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let name = field.name();
        let w = &mut self.writer;
        self.result = if name == "message" {
            // The gateway's own words; escaped all the same.
            w.write_str(separator).and_then(|()| {
                if is_plain_ascii(text) && !text.contains('\'') {
                    w.write_str(text)
                } else {
                    write!(w, "{}", text.escape_debug())
                }
            })
        } else {
            w.write_str(separator)
                .and_then(|()| w.write_str(name))
                .and_then(|()| w.write_char('='))
                .and_then(|()| write_value(w, text, quote_always))
        };
    }
}

/// Printable ASCII with no `"` or `\`: text that `{:?}` and
/// `escape_debug` leave as it is (apart from quotes around it).
fn is_plain_ascii(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl tracing::field::Visit for HumanVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.write(field, value, true);
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.write(field, itoa::Buffer::new().format(value), false);
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.write(field, itoa::Buffer::new().format(value), false);
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

/// One request's access line (SPEC's log fields), written by [`access`].
#[derive(Clone, Copy)]
pub struct Access<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub host: &'a str,
    pub decision: &'a str,
    pub user: &'a str,
    /// The name of the API token the request came with (never its value).
    pub token: Option<&'a str>,
    pub client: &'a str,
    /// How long the request took, in microseconds.
    pub micros: u64,
    pub request_id: &'a str,
}

/// Where [`access`] writes its lines itself: set by [`write_access_directly`].
static DIRECT: std::sync::OnceLock<BatchedStderr> = std::sync::OnceLock::new();

/// From now on [`access`] formats the human line itself and appends it to
/// `writer`'s buffers, instead of going through tracing's event machinery
/// (7 % of the gateway's CPU per proxied request went to the access line,
/// measured side by side with it switched off). Only for the human format
/// without colours, which it writes byte for byte as tracing would (tested
/// against it); `AUTHGATE_LOG` still decides whether the line is written.
pub fn write_access_directly(writer: &BatchedStderr) {
    let _ = DIRECT.set(writer.clone());
}

/// Logs one request's access line (target `authgate::access`).
pub fn access(line: &Access<'_>) {
    if let Some(writer) = DIRECT.get() {
        if tracing::enabled!(target: "authgate::access", tracing::Level::INFO) {
            thread_local! {
                static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
            }
            TEXT.with(|text| {
                let mut text = text.borrow_mut();
                text.clear();
                // A String takes whatever is written to it.
                let _ = human_access_line(line, &mut text);
                let _ = writer.make_writer().write(text.as_bytes());
                if text.capacity() > 4096 {
                    *text = String::new();
                }
            });
        }
        return;
    }
    match line.token {
        None => tracing::info!(
            target: "authgate::access",
            method = %line.method,
            path = %line.path,
            status = line.status,
            host = line.host,
            decision = line.decision,
            user = line.user,
            client = %line.client,
            duration_ms = line.micros as f64 / 1e3,
            request_id = line.request_id,
            "request"
        ),
        Some(token) => tracing::info!(
            target: "authgate::access",
            method = %line.method,
            path = %line.path,
            status = line.status,
            host = line.host,
            decision = line.decision,
            user = line.user,
            token,
            client = %line.client,
            duration_ms = line.micros as f64 / 1e3,
            request_id = line.request_id,
            "request"
        ),
    }
}

/// The access line as tracing-subscriber's full format with [`HumanFields`]
/// and [`Clock`] writes it, newline included.
fn human_access_line(line: &Access<'_>, out: &mut String) -> std::fmt::Result {
    out.push_str(std::str::from_utf8(&timestamp()).map_err(|_| std::fmt::Error)?);
    out.push_str("  INFO authgate::access: request method=");
    write_value(out, line.method, false)?;
    out.push_str(" path=");
    write_value(out, line.path, false)?;
    out.push_str(" status=");
    out.push_str(itoa::Buffer::new().format(line.status));
    out.push_str(" host=");
    write_value(out, line.host, true)?;
    out.push_str(" decision=");
    write_value(out, line.decision, true)?;
    out.push_str(" user=");
    write_value(out, line.user, true)?;
    if let Some(token) = line.token {
        out.push_str(" token=");
        write_value(out, token, true)?;
    }
    out.push_str(" client=");
    write_value(out, line.client, false)?;
    // What `{:?}` writes for micros / 1e3: the shortest decimal, ".0" for
    // whole milliseconds.
    out.push_str(" duration_ms=");
    out.push_str(itoa::Buffer::new().format(line.micros / 1000));
    let fraction = line.micros % 1000;
    out.push('.');
    let digits = [
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ];
    let mut len = 3;
    while len > 1 && digits[len - 1] == b'0' {
        len -= 1;
    }
    out.push_str(std::str::from_utf8(&digits[..len]).map_err(|_| std::fmt::Error)?);
    out.push_str(" request_id=");
    write_value(out, line.request_id, true)?;
    out.push('\n');
    Ok(())
}

/// A field's value: bare when one plain word (and not `quote_always`),
/// else quoted and escaped as `{:?}` would, without its machinery for
/// plain text.
fn write_value(w: &mut impl std::fmt::Write, text: &str, quote_always: bool) -> std::fmt::Result {
    if !quote_always && is_bare_word(text) {
        w.write_str(text)
    } else if is_plain_ascii(text) {
        w.write_char('"')?;
        w.write_str(text)?;
        w.write_char('"')
    } else {
        write!(w, "{text:?}")
    }
}

/// The time of a log line as tracing-subscriber's `SystemTime` writes it
/// (RFC 3339, UTC, microseconds: `2026-11-29T21:40:39.123456Z`), for less:
/// each thread keeps the text up to the seconds and makes it again only
/// when the second changes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Clock;

impl tracing_subscriber::fmt::time::FormatTime for Clock {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let line = timestamp();
        w.write_str(std::str::from_utf8(&line).map_err(|_| std::fmt::Error)?)
    }
}

/// Now, as [`Clock`] writes it.
fn timestamp() -> [u8; 27] {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
    }
    let (second, mut prefix) = SECOND.get();
    if second != now.as_secs() {
        prefix = date_time_to_the_second(now.as_secs());
        SECOND.set((now.as_secs(), prefix));
    }
    let mut line = [0u8; 27];
    line[..20].copy_from_slice(&prefix);
    let mut micros = now.subsec_micros();
    for digit in line[20..26].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    line[26] = b'Z';
    line
}

/// `YYYY-MM-DDTHH:MM:SS.` for seconds since 1970 (years up to 9999).
fn date_time_to_the_second(unix_seconds: u64) -> [u8; 20] {
    let days = unix_seconds / 86_400;
    let in_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"0000-00-00T00:00:00.";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3600);
    put(14, 2, in_day % 3600 / 60);
    put(17, 2, in_day % 60);
    text
}

/// Year, month and day of the proleptic Gregorian calendar for days since
/// 1970-01-01 (the days-from-civil algorithm run backwards, as published
/// by Howard Hinnant, for days >= 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
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
    fn the_clock_writes_what_tracing_subscriber_writes() {
        // Known instants, leap days and year ends included.
        for (seconds, text) in [
            (0, "1970-01-01T00:00:00."),
            (951_782_400, "2000-02-29T00:00:00."),
            (1_709_251_199, "2024-02-29T23:59:59."),
            (1_798_761_599, "2026-12-31T23:59:59."),
            (4_107_542_400, "2100-03-01T00:00:00."),
        ] {
            assert_eq!(
                std::str::from_utf8(&date_time_to_the_second(seconds)).unwrap(),
                text
            );
        }
        // And the same shape as the library's own clock, now.
        use tracing_subscriber::fmt::format::Writer;
        use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
        let (mut ours, mut theirs) = (String::new(), String::new());
        Clock.format_time(&mut Writer::new(&mut ours)).unwrap();
        SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .unwrap();
        assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
        // Equal up to the minute unless a minute turned between the two.
        assert!(
            ours[..16] == theirs[..16] || ours[17..19] == *"00",
            "{ours} vs {theirs}"
        );
    }

    #[test]
    fn fields_are_written_as_debug_formatting_would() {
        let line = human_line(|| {
            tracing::info!(
                target: "authgate::access",
                method = %"GET",
                path = %"/a",
                status = 200u16,
                signed = -3i64,
                quoted = "plain text",
                odd = "tab\there \"q\" é",
                ratio = 0.25,
                "it's done"
            );
        });
        assert!(
            line.ends_with(
                "authgate::access: it\\'s done method=GET path=/a status=200 signed=-3 \
                 quoted=\"plain text\" odd=\"tab\\there \\\"q\\\" é\" ratio=0.25\n"
            ),
            "{line}"
        );
    }

    /// The gateway's own access line is the one tracing would write, byte
    /// for byte after the time, for awkward values too.
    #[test]
    fn the_direct_access_line_is_what_tracing_writes() {
        let plain = Access {
            method: "GET",
            path: "/app/",
            status: 200,
            host: "app.example:8443",
            decision: "allow",
            user: "bench",
            token: None,
            client: "127.0.0.1",
            micros: 423,
            request_id: "c536b2e73245accddd1348f25b8447e6",
        };
        let cases = [
            Access { ..plain },
            Access { micros: 0, ..plain },
            Access {
                micros: 1000,
                ..plain
            },
            Access {
                micros: 20,
                ..plain
            },
            Access {
                micros: 100_001,
                ..plain
            },
            Access {
                micros: 30_185,
                ..plain
            },
            Access {
                micros: 987_654_321_000,
                ..plain
            },
            Access {
                method: "M-SEARCH",
                path: "/a b=c",
                status: 404,
                host: "-",
                decision: "-",
                user: "-",
                client: "::1",
                ..plain
            },
            Access {
                path: "/\"quoted\"/é\u{1b}[2K",
                host: "h\"ost",
                decision: "deny",
                user: "a\nINFO authgate::security: event=login_ok user=alice\r",
                client: "2001:db8::1",
                status: 403,
                ..plain
            },
            Access {
                path: "",
                user: "zoë",
                request_id: "id with space",
                ..plain
            },
            Access {
                token: Some("ci deploy"),
                ..plain
            },
        ];
        for case in &cases {
            let theirs = human_line(|| access(case));
            let mut ours = String::new();
            human_access_line(case, &mut ours).unwrap();
            assert_eq!(ours.len() - 27, theirs.len() - 27, "{ours}{theirs}");
            assert_eq!(ours[27..], theirs[27..]);
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
