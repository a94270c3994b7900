//! `simulate serve` and `simulate run`: the local Stripe Issuing emulator and the
//! seeded scenario runner.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::EmulatorArgs;
use crate::app::shutdown_signal;
use crate::config::ProcessEnv;
use crate::http;

fn emulator_config(
    args: EmulatorArgs,
    namespace: Option<String>,
) -> crate::simulate::EmulatorOptions {
    crate::simulate::EmulatorOptions {
        webhook_url: args.webhook_url,
        secret: args.secret,
        config: args.config,
        window_ms: args.window_ms,
        timeout_fallback: args.timeout_fallback,
        namespace,
        api_version: args.api_version,
    }
}

pub(super) fn serve(
    args: EmulatorArgs,
    listen: String,
    api_key: String,
    namespace: Option<String>,
) -> anyhow::Result<ExitCode> {
    let options = emulator_config(args, namespace);
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let clock = crate::clock::Clock::system();
        let server =
            http::emulator::EmulatorServer::bind(&options, &listen, &api_key, &ProcessEnv, clock)
                .await?;
        println!(
            "cardgate simulator listening on http://{}",
            server.local_addr()
        );
        std::io::stdout().flush()?;
        server.serve(shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn run(
    path: &Path,
    args: EmulatorArgs,
    seed: Option<u64>,
    namespace: Option<String>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let options = emulator_config(args, namespace);
    let runtime = super::runtime()?;
    let clock = crate::clock::Clock::system();
    let report = runtime.block_on(http::emulator::run_scenario(
        path,
        &options,
        seed,
        quiet,
        &ProcessEnv,
        clock,
    ))?;
    print!("{}", report.render());
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
