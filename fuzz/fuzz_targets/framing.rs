//! The HTTP/1.1 framing scanner: the same bytes give the same verdict
//! (which request is flagged, how many heads were read) however the
//! connection's reads split them.
#![no_main]

use authgate::connection::framing::Scanner;
use libfuzzer_sys::fuzz_target;

fn scan(stream: &[u8], cuts: &[u8]) -> (Option<u64>, u64) {
    let mut scanner = Scanner::new(8192);
    let mut flagged = None;
    let mut rest = stream;
    let mut sizes = cuts.iter().cycle();
    while !rest.is_empty() {
        let size = if cuts.is_empty() {
            rest.len()
        } else {
            usize::from(*sizes.next().unwrap()) + 1
        };
        let (piece, after) = rest.split_at(size.min(rest.len()));
        if let Some(index) = scanner.feed(piece) {
            flagged.get_or_insert(index);
        }
        rest = after;
    }
    (flagged, scanner.heads_seen())
}

fuzz_target!(|data: &[u8]| {
    // The first bytes say where the reads end, the rest is the stream.
    let Some((&count, data)) = data.split_first() else {
        return;
    };
    let (cuts, stream) = data.split_at(usize::from(count % 8).min(data.len()));
    let whole = scan(stream, &[]);
    assert_eq!(whole, scan(stream, cuts), "reads split at {cuts:?}");
    assert_eq!(whole, scan(stream, &[0]), "one byte at a time");
});
