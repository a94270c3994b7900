//! The `cardgate` binary: everything it does is [`cardgate::cli::main`].

use std::process::ExitCode;

fn main() -> ExitCode {
    cardgate::cli::main()
}
