//! One client connection as the server and the pipeline both see it: the
//! HTTP/1.1 framing guard's verdicts (which requests were framed
//! ambiguously) and the idle watchdog's activity (requests in flight and
//! seen, bytes moving).

pub mod framing;
pub mod idle;
