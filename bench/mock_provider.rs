//! One mock provider of `authproxy::demo::mocks` as a process of its own,
//! for benchmark harnesses that are not Rust (bench/compare.py):
//!
//! ```text
//! cargo build --release --example mock_provider
//! target/release/examples/mock_provider STYLE ADDR [CLIENT_ID CLIENT_SECRET]
//! ```
//!
//! STYLE is `rips`, `onecloud`, `standard` or `implicit`; ADDR a loopback
//! address to listen on (port 0 picks one). Prints `listening on ADDR`,
//! then serves until killed. Token requests are counted at `GET
//! /_mock/stats` (`token_requests`).

use std::net::SocketAddr;
use std::process::ExitCode;

use authproxy::demo::mocks::{MockProvider, Style};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let style = match args.first().map(String::as_str) {
        Some("rips") => Style::Rips,
        Some("onecloud") => Style::OneCloud,
        Some("standard") => Style::Standard,
        Some("implicit") => Style::Implicit,
        _ => return usage(),
    };
    let Some(addr) = args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        return usage();
    };
    if !addr.ip().is_loopback() {
        eprintln!("mock_provider: {addr} is not a loopback address");
        return ExitCode::from(64);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mock_provider: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mock = MockProvider::start_on(listener, style);
        if let [_, _, id, secret] = args.as_slice() {
            mock.set(|s| {
                s.client_id = id.clone();
                s.client_secret = secret.clone();
            });
        }
        // Nothing is recorded per API request: a benchmark runs long.
        mock.set(|s| s.record_api = false);
        println!("listening on {}", mock.addr);
        std::future::pending::<ExitCode>().await
    })
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: mock_provider rips|onecloud|standard|implicit ADDR [CLIENT_ID CLIENT_SECRET]"
    );
    ExitCode::from(64)
}
