//! The per-request cost of DPoP (RFC 9449): one proof, as the proxy makes
//! it for every proxied request of a `dpop = true` provider (claims with a
//! new `jti`, the cached JOSE header with the JWK, one ES256 signature
//! with ring), against the Bearer path's cost of nothing.
//!
//! ```text
//! cargo bench --bench dpop_proof        # release: N = 20000 proofs, µs per proof
//! cargo test --all-targets              # quick smoke: N = 200 (debug)
//! ```
//!
//! Single-threaded and CPU-bound: the thread's CPU time over N proofs
//! (from `/proc/thread-self/schedstat`, so other work on a shared machine
//! does not count), and the wall-clock time beside it. The
//! "everything made per proof" row also makes the header (JWK) and thumbprint each time, as
//! a proof made from the key alone would: the difference is what caching
//! them per key saves.

use std::time::Instant;

use authproxy::oauth::dpop::{ath, Dpop, DpopKey};

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n: u32 = if bench { 20_000 } else { 200 };
    let key = DpopKey::generate();
    let dpop = Dpop::new(key.clone());
    let token = "eyJhbGciOiJFUzI1NiJ9.".to_string() + &"x".repeat(900);
    let ath = ath(&token);
    let origin = "https://api.example.com";
    let htu = "https://api.example.com/v1/items";

    let (started, cpu) = (Instant::now(), cpu_ns());
    let mut bytes = 0;
    for i in 0..n {
        let proof = dpop.proof_with(
            &key,
            "GET",
            origin,
            htu,
            Some(&ath),
            1_700_000_000 + u64::from(i),
        );
        bytes += proof.len();
    }
    let cached = per_proof(started, cpu, n);

    let (started, cpu) = (Instant::now(), cpu_ns());
    for i in 0..n {
        // What caching saves: reading the key again (the JWK, the
        // header's base64, the thumbprint) and hashing the token.
        let again = DpopKey::from_stored(key.stored()).unwrap();
        let proof = again.proof(
            "GET",
            htu,
            Some(&ath_of(&token)),
            None,
            1_700_000_000 + u64::from(i),
        );
        bytes += proof.len();
    }
    let uncached = per_proof(started, cpu, n);

    println!("| DPoP proof ({n} proofs, one thread) | CPU µs per proof | wall µs per proof |");
    println!("|---|---:|---:|");
    let row = |what: &str, (cpu, wall): (f64, f64)| println!("| {what} | {cpu:.1} | {wall:.1} |");
    row(
        "cached header, JWK, thumbprint, ath (what the proxy does)",
        cached,
    );
    row("everything made per proof", uncached);
    println!("(proof size {} bytes)", bytes / (2 * n as usize));
}

/// This thread's time on a CPU so far, in ns (the first field of
/// schedstat); 0 where there is no such file.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// (CPU µs, wall µs) per proof since `started` / `cpu`.
fn per_proof(started: Instant, cpu: u64, n: u32) -> (f64, f64) {
    let wall = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let cpu = (cpu_ns() - cpu) as f64 / 1e3 / f64::from(n);
    (cpu, wall)
}

fn ath_of(token: &str) -> String {
    ath(token)
}
