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
//! Single-threaded and CPU-bound: wall-clock time over N proofs. The
//! "uncached" row also makes the header (JWK) and thumbprint each time, as
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

    let started = Instant::now();
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
    let cached = started.elapsed().as_secs_f64() / f64::from(n);

    let started = Instant::now();
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
    let uncached = started.elapsed().as_secs_f64() / f64::from(n);

    println!("| DPoP proof ({n} proofs, one thread) | µs per proof |");
    println!("|---|---|");
    println!(
        "| cached header, JWK, thumbprint, ath (what the proxy does) | {:.1} |",
        cached * 1e6
    );
    println!("| everything made per proof | {:.1} |", uncached * 1e6);
    println!("(proof size {} bytes)", bytes / (2 * n as usize));
}

fn ath_of(token: &str) -> String {
    ath(token)
}
