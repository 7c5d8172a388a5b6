//! Thin binary: everything lives in the library so tests can drive it.

/// glibc malloc was about an eighth of the proxy's user CPU per request
/// (small, short-lived allocations from several threads, plus
/// consolidation work); mimalloc's thread-local free lists make those cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    authproxy::cli::main()
}
