//! The `cardgate` binary: everything it does is [`cardgate::cli::main`].

use std::process::ExitCode;

/// mimalloc, not glibc's malloc: a decision's row is allocated on a tokio worker
/// and freed on the store's writer thread, and glibc pays for that cross-arena
/// free and for growing and shrinking its per-thread heaps (an `mprotect` per
/// request under load). See BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cardgate::cli::main()
}
