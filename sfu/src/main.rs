//! The `sfu` binary: signaling and media in one process, with embedded defaults.
//!
//! This file parses the command line, starts logging and dispatches; each command lives in
//! a module of the binary ([`serve`], [`relay`], [`token`], the admin API's client
//! [`admin_client`]), beside the CLI ([`cli`]), the config file and secret files
//! ([`config`]), the groups' policies ([`groups`]), the node's part in a cluster
//! ([`cluster`]), how the server stops ([`stop`]), what
//! it tells systemd ([`notify`]) and what they ask of the host ([`host`]). They compose
//! the libraries (`sfu`'s media plane, `signaling`, `turn`) and are no part of any
//! library's interface.

mod admin_client;
mod cli;
mod cluster;
mod config;
mod groups;
mod host;
mod notify;
mod relay;
mod serve;
mod stop;
mod token;

use anyhow::Context;

use crate::cli::{AdminCommand, Command};

fn main() -> anyhow::Result<()> {
    let cli = match config::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => match e.downcast_ref::<clap::Error>() {
            Some(usage) => usage.exit(),
            None => return Err(e),
        },
    };
    match cli.command {
        Some(Command::Token(args)) => {
            init_stderr_log()?;
            token::run(args)
        }
        Some(Command::Admin(AdminCommand::Token(args))) => {
            init_stderr_log()?;
            token::admin(args)
        }
        Some(Command::Admin(AdminCommand::WebhookSecret)) => {
            println!("{}", signaling::webhooks::WebhookSecret::generate());
            Ok(())
        }
        Some(Command::Admin(AdminCommand::Request(request))) => {
            init_stderr_log()?;
            // A refusal is the answer, not a failure of this program: its causes on one
            // line, and no backtrace (whatever RUST_BACKTRACE says).
            if let Err(e) = admin_client::run(request) {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::Turn(args)) => {
            init_log(&args.log.log)?;
            relay::standalone(args)
        }
        Some(Command::Serve(args)) => {
            init_log(&args.log.log)?;
            serve::run(args)
        }
        None => {
            init_log(&cli.serve.log.log)?;
            serve::run(cli.serve)
        }
    }
}

fn init_log(filter: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(filter))
        .with_context(|| format!("bad --log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    Ok(())
}

/// Warnings only, to stderr: a command whose stdout is its result (a token) still says
/// what is wrong (a secret file others may read).
fn init_stderr_log() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new("warn")?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
    Ok(())
}

/// The filter as given, with `stun_types` (the STUN parser of the TURN relay) kept to
/// errors unless the filter names it: it logs a WARN for every malformed message, and
/// those come from the network, as many as anyone sends (the relay counts them as
/// `malformed` instead).
fn log_filter(filter: &str) -> String {
    if filter.contains("stun_types") {
        filter.to_string()
    } else {
        format!("{filter},stun_types=error")
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn the_stun_parser_is_kept_to_errors_unless_asked_for() {
        assert_eq!(log_filter("info"), "info,stun_types=error");
        assert_eq!(
            log_filter("debug,sfu=trace"),
            "debug,sfu=trace,stun_types=error"
        );
        assert_eq!(log_filter("info,stun_types=debug"), "info,stun_types=debug");
    }
}
