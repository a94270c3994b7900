//! `sign`: a `Stripe-Signature` header for a payload, signed the way Stripe signs,
//! so a person can send cardgate a hand-made event with curl.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::load_config;
use crate::clock::Clock;

pub(super) fn sign(
    file: &Path,
    secrets: Vec<String>,
    timestamp: Option<i64>,
    config_path: &Path,
) -> anyhow::Result<ExitCode> {
    let mut body = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut body)?;
    } else {
        body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    }
    let secrets = if secrets.is_empty() {
        load_config(config_path, None, None)
            .context("no --secret given and the config could not supply one")?
            .webhook_secrets
    } else {
        secrets
    };
    let t = timestamp.unwrap_or_else(|| Clock::system().now());
    println!("{}", crate::stripe::sign_header(&secrets, t, &body));
    Ok(ExitCode::SUCCESS)
}
