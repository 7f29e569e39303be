//! One binary for every target (one build and one link for all of them):
//! `civicpulse-fuzz <target>` runs the target under afl-fuzz, or once on
//! standard input when started by hand, to replay a crash:
//! `target/fuzz/debug/civicpulse-fuzz socket_packet < crash-file`.

#[global_allocator]
static ALLOC: civicpulse_fuzz::alloc::Counting = civicpulse_fuzz::alloc::Counting;

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(&(_, target)) = civicpulse_fuzz::TARGETS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = civicpulse_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: civicpulse-fuzz <target>; targets: {}", names.join(" "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| target(data));
}
