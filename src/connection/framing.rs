//! A watch on HTTP/1.1 request framing.
//!
//! hyper copes with a request that carries both `Content-Length` and
//! `Transfer-Encoding` the way RFC 9112 §6.3 allows: it drops the length,
//! reads the chunked body and closes the connection afterwards. It hands the
//! request on without saying so, and that combination is the raw material of
//! request smuggling, so authgate refuses it outright (400, never proxied).
//! To see it, [`FramingGuard`] reads along the bytes hyper reads, follows
//! request heads and body framing, and records the index of the first
//! request whose head is ambiguous; the pipeline compares each request's
//! index on the connection against it.
//!
//! The watch never goes blind while the connection still speaks HTTP/1.1:
//! a request that asks for an upgrade is followed like any other (only a
//! 101 actually sent, see [`FramingVerdict::switched_protocols`], ends the
//! watch), bare-LF line ends are followed as httparse reads them, and
//! whatever it cannot follow (a head it cannot parse, a broken chunk line)
//! marks the rest of the connection as untrusted, which closes it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::idle::{self, Activity};

/// Shared between the guard (which writes it) and the pipeline (which reads it).
#[derive(Debug)]
pub struct FramingVerdict {
    first_ambiguous: AtomicU64,
    /// A 101 went out: the bytes that follow are another protocol's.
    switched: AtomicBool,
}

impl Default for FramingVerdict {
    fn default() -> Self {
        FramingVerdict {
            first_ambiguous: AtomicU64::new(u64::MAX),
            switched: AtomicBool::new(false),
        }
    }
}

impl FramingVerdict {
    /// Whether request number `index` (from 0) on this connection, or one
    /// before it, had an ambiguous head. Everything after such a request is
    /// suspect too: its bytes may belong to a smuggled body.
    pub fn is_ambiguous(&self, index: u64) -> bool {
        index >= self.first_ambiguous.load(Ordering::Acquire)
    }

    fn flag(&self, index: u64) {
        self.first_ambiguous.fetch_min(index, Ordering::AcqRel);
    }

    /// Called when a 101 response has been sent on the connection: from
    /// here on the bytes are not HTTP/1.1, and the watch ends.
    pub fn switched_protocols(&self) {
        self.switched.store(true, Ordering::Release);
    }
}

/// Passes bytes through unchanged, scanning what is read. It also tells
/// the connection's [`Activity`] when a request head is arriving, and when
/// it is dropped in the middle of a request (the gateway answered early,
/// or refused the head) it hands the connection to [`idle::linger`] so that
/// the answer reaches the client.
pub struct FramingGuard<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    /// Always `Some` until dropped.
    inner: Option<IO>,
    scanner: Scanner,
    verdict: Arc<FramingVerdict>,
    activity: Arc<Activity>,
    /// The client closed its side: nothing to linger for.
    read_closed: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> FramingGuard<IO> {
    pub fn new(
        inner: IO,
        verdict: Arc<FramingVerdict>,
        max_head: usize,
        activity: Arc<Activity>,
    ) -> Self {
        FramingGuard {
            inner: Some(inner),
            scanner: Scanner::new(max_head),
            verdict,
            activity,
            read_closed: false,
        }
    }

    fn io(&mut self) -> Pin<&mut IO> {
        Pin::new(self.inner.as_mut().expect("present until dropped"))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for FramingGuard<IO> {
    fn drop(&mut self) {
        let Some(io) = self.inner.take() else { return };
        if self.read_closed || !self.scanner.mid_request() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(idle::linger(io));
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = this.io().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            let read = &buf.filled()[before..];
            if read.is_empty() {
                this.read_closed = true;
            }
            if this.verdict.switched.load(Ordering::Acquire) {
                return result;
            }
            if let Some(index) = this.scanner.feed(read) {
                this.verdict.flag(index);
            }
            this.activity.head_arriving(this.scanner.in_head());
        }
        result
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for FramingGuard<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|io| io.is_write_vectored())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    /// It could not follow the framing: every later request is flagged.
    Lost,
}

/// Longest chunk-size or trailer line it keeps; hyper refuses longer ones.
const MAX_LINE: usize = 8 * 1024;

/// Follows a connection's bytes as HTTP/1.1 request framing (heads,
/// `Content-Length` and chunked bodies), wherever the reads split them.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    buffer: Vec<u8>,
    heads_seen: u64,
    max_head: usize,
}

impl Scanner {
    pub fn new(max_head: usize) -> Self {
        Scanner {
            state: State::Head,
            buffer: Vec::new(),
            heads_seen: 0,
            max_head: max_head.max(8192),
        }
    }

    /// Part of a request head has come, not all of it.
    fn in_head(&self) -> bool {
        self.state == State::Head && self.buffer.iter().any(|&b| b != b'\r' && b != b'\n')
    }

    /// Between requests (or past following): nothing of a request is
    /// outstanding. Otherwise the client may still be sending.
    fn mid_request(&self) -> bool {
        self.state != State::Head || self.in_head()
    }

    /// How many request heads it has read to their end.
    pub fn heads_seen(&self) -> u64 {
        self.heads_seen
    }

    /// Follows `data`; returns the index of a request whose head is ambiguous.
    pub fn feed(&mut self, mut data: &[u8]) -> Option<u64> {
        let mut flagged = None;
        while !data.is_empty() {
            match self.state {
                State::Lost => return flagged,
                State::Head => {
                    let searched = self.buffer.len().saturating_sub(2);
                    self.buffer.extend_from_slice(data);
                    let Some(end) = find_head_end(&self.buffer, searched) else {
                        if self.buffer.len() > self.max_head {
                            self.state = State::Lost;
                            flagged.get_or_insert(self.heads_seen);
                        }
                        return flagged;
                    };
                    let consumed_from_data = end - (self.buffer.len() - data.len());
                    let head = std::mem::take(&mut self.buffer);
                    let next = match framing_of(&head[..end]) {
                        Some(next) => next,
                        None => {
                            // Ambiguous, or nothing it can follow: this
                            // request and all after it are refused.
                            flagged.get_or_insert(self.heads_seen);
                            State::Lost
                        }
                    };
                    self.heads_seen += 1;
                    self.state = next;
                    self.buffer = head;
                    self.buffer.clear();
                    data = &data[consumed_from_data..];
                }
                State::Body(remaining) | State::ChunkData(remaining) => {
                    let take = remaining.min(data.len() as u64);
                    data = &data[take as usize..];
                    let left = remaining - take;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), n) => State::Body(n),
                        (_, 0) => State::ChunkDataEnd,
                        (_, n) => State::ChunkData(n),
                    };
                }
                State::ChunkSize | State::ChunkDataEnd | State::Trailers => {
                    let Some(newline) = data.iter().position(|&b| b == b'\n') else {
                        self.buffer.extend_from_slice(data);
                        if self.buffer.len() > MAX_LINE {
                            self.state = State::Lost;
                            flagged.get_or_insert(self.heads_seen);
                        }
                        return flagged;
                    };
                    self.buffer.extend_from_slice(&data[..newline]);
                    data = &data[newline + 1..];
                    let line = trim_cr(&self.buffer);
                    self.state = match self.state {
                        State::ChunkDataEnd if line.is_empty() => State::ChunkSize,
                        State::ChunkSize => match chunk_size(line) {
                            Some(0) => State::Trailers,
                            Some(n) => State::ChunkData(n),
                            None => State::Lost,
                        },
                        State::Trailers if line.is_empty() => State::Head,
                        State::Trailers => State::Trailers,
                        _ => State::Lost,
                    };
                    if self.state == State::Lost {
                        flagged.get_or_insert(self.heads_seen);
                    }
                    self.buffer.clear();
                }
            }
        }
        flagged
    }
}

/// Index just past the blank line that ends a head, searching from `from`.
/// Blank lines before a request line (RFC 9112 §2.2) are skipped over.
/// Lines may end in CRLF or a bare LF, as httparse accepts: the head ends
/// at the first line feed followed by an empty line (`\n\n` or `\n\r\n`).
fn find_head_end(buffer: &[u8], from: usize) -> Option<usize> {
    let start = buffer.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let from = from.max(start);
    let window = &buffer[from..];
    window.iter().enumerate().find_map(|(i, &b)| {
        if b != b'\n' {
            return None;
        }
        match window.get(i + 1..) {
            Some([b'\n', ..]) => Some(from + i + 2),
            Some([b'\r', b'\n', ..]) => Some(from + i + 3),
            _ => None,
        }
    })
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|&b| b == b';').next()?;
    let digits = std::str::from_utf8(digits).ok()?.trim();
    u64::from_str_radix(digits, 16).ok()
}

/// What follows a head; `None` when the head is ambiguous (a length and a
/// transfer coding, or two lengths) or cannot be followed at all.
fn framing_of(head: &[u8]) -> Option<State> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let mut length = None;
    for h in request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        let parsed = std::str::from_utf8(h.value)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())?;
        match length {
            Some(seen) if seen != parsed => return None,
            _ => length = Some(parsed),
        }
    }
    let encodings: Vec<&[u8]> = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|h| h.value)
        .collect();
    if !encodings.is_empty() {
        if length.is_some() {
            return None;
        }
        let last = encodings
            .last()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        // Anything but chunked last is refused by hyper (RFC 9112 §6.3).
        return match last {
            Some(e) if e.eq_ignore_ascii_case("chunked") => Some(State::ChunkSize),
            _ => None,
        };
    }
    // An `Upgrade` header changes nothing here: until a 101 is sent the
    // connection is HTTP/1.1 and the next bytes are the next request.
    match length {
        Some(0) | None => Some(State::Head),
        Some(n) => Some(State::Body(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(stream: &[u8], piece: usize) -> (Option<u64>, u64) {
        let mut s = Scanner::new(8192);
        let mut flagged = None;
        for chunk in stream.chunks(piece) {
            if let Some(i) = s.feed(chunk) {
                flagged.get_or_insert(i);
            }
        }
        (flagged, s.heads_seen)
    }

    const CLEAN: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\nPOST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn follows_clean_requests_in_any_piece_size() {
        for piece in [1, 2, 3, 7, 64, CLEAN.len()] {
            assert_eq!(scan(CLEAN, piece), (None, 4), "piece size {piece}");
        }
    }

    #[test]
    fn flags_length_with_transfer_encoding_in_either_order() {
        let te_first = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n";
        let cl_first = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for piece in [1, 5, 1000] {
            assert_eq!(scan(te_first, piece).0, Some(1));
            assert_eq!(scan(cl_first, piece).0, Some(0));
        }
    }

    #[test]
    fn a_body_that_looks_like_a_request_is_not_a_head() {
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        stream.extend_from_slice(body);
        assert_eq!(scan(&stream, 3), (None, 1));
    }

    #[test]
    fn verdict_covers_later_requests() {
        let v = FramingVerdict::default();
        assert!(!v.is_ambiguous(0));
        v.flag(2);
        assert!(!v.is_ambiguous(1));
        assert!(v.is_ambiguous(2));
        assert!(v.is_ambiguous(3));
    }

    #[test]
    fn an_upgrade_request_does_not_blind_it() {
        let stream = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for piece in [1, 9, 1000] {
            assert_eq!(scan(stream, piece).0, Some(1), "piece {piece}");
        }
    }

    #[test]
    fn bare_lf_heads_are_followed() {
        let mixed = b"GET / HTTP/1.1\nHost: x\n\r\nPOST / HTTP/1.1\nHost: x\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\r\n\r\n";
        for piece in [1, 2, 5, 1000] {
            assert_eq!(scan(mixed, piece), (Some(1), 2), "piece {piece}");
        }
        let clean = b"POST /a HTTP/1.1\nHost: x\nContent-Length: 2\n\r\nhiGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(scan(clean, 1), (None, 2));
    }

    #[test]
    fn what_it_cannot_follow_flags_the_rest() {
        let bad_chunk = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(scan(bad_chunk, 4).0, Some(1));
        let garbage = b"\x16\x03\x01 not http at all\r\n\r\n";
        assert_eq!(scan(garbage, 3).0, Some(0));
        let huge = [b'a'; 20_000];
        assert_eq!(scan(&huge, 512).0, Some(0));
    }

    #[tokio::test]
    async fn a_switched_connection_is_not_scanned() {
        use tokio::io::AsyncReadExt;
        let ambiguous: &[u8] =
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for switched in [false, true] {
            let verdict = Arc::new(FramingVerdict::default());
            if switched {
                verdict.switched_protocols();
            }
            let mut guard = FramingGuard::new(
                std::io::Cursor::new(ambiguous.to_vec()),
                verdict.clone(),
                8192,
                Arc::default(),
            );
            let mut sink = Vec::new();
            guard.read_to_end(&mut sink).await.unwrap();
            assert_eq!(sink, ambiguous, "bytes pass unchanged");
            assert_eq!(verdict.is_ambiguous(0), !switched);
        }
    }

    mod properties {
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn random_bytes_never_panic_and_piece_size_never_matters(
                bytes in proptest::collection::vec(prop_oneof![
                    Just(b'\r'), Just(b'\n'), Just(b':'), Just(b' '), Just(b'0'), Just(b'5'),
                    any::<u8>(),
                ], 0..600),
                templates in proptest::collection::vec(prop_oneof![
                    Just(&b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n"[..]),
                    Just(&b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..]),
                    Just(&b"GET / HTTP/1.1\nUpgrade: x\n\n"[..]),
                    Just(&b"3\r\nabc\r\n0\r\n\r\n"[..]),
                ], 0..4),
                piece in 1usize..64,
            ) {
                let mut stream = Vec::new();
                for t in &templates {
                    stream.extend_from_slice(t);
                }
                stream.extend_from_slice(&bytes);
                let whole = super::scan(&stream, stream.len().max(1));
                let pieces = super::scan(&stream, piece);
                prop_assert_eq!(whole, pieces);
            }
        }
    }
}
