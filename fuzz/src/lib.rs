//! The fuzz targets: one function per parser that takes the fuzzer's bytes
//! and checks what must hold for every input. A failed check panics, which
//! the AFL++ harness (`main.rs`) turns into a crash. Where a parser has an
//! encoder the checks are round trips (what decodes re-encodes to the same
//! thing); everywhere, malformed input must be an error and never a panic,
//! and what is allocated must stay proportional to the input.
//!
//! `fuzz/run.sh` runs them; `fuzz/corpus/<target>/` holds their seeds.

pub mod alloc;
mod domain;
mod engine;
mod http;
mod socket;
mod websocket;

/// A target: panics on an input that breaks one of its checks.
pub type Target = fn(&[u8]);

/// Every target, by the name `main.rs` and `run.sh` know it by.
pub const TARGETS: &[(&str, Target)] = &[
    ("engine_packet", engine::packet),
    ("engine_payload", engine::payload),
    ("socket_packet", socket::packet),
    ("socket_decoder", socket::decoder),
    ("ws_frames", websocket::frames),
    ("http_request", http::request),
    ("bus_message", domain::bus_message),
    ("emitter", domain::emitter),
    ("domain_json", domain::json),
];

/// Fails the run when `f` allocated more than `per_byte` bytes for each of
/// the `len` input bytes (and a constant for the fixed costs) at its peak:
/// the parsers must not trust a declared length.
pub(crate) fn bounded<R>(what: &str, len: usize, per_byte: usize, f: impl FnOnce() -> R) -> R {
    const FIXED: usize = 64 * 1024;
    let (result, peak) = alloc::peak_during(f);
    let limit = FIXED + per_byte * len;
    assert!(peak <= limit, "{what}: {peak} bytes allocated for {len} bytes of input (limit {limit})");
    result
}
