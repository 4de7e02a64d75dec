//! Where settings come from besides flags and the environment: the config file
//! (`--config FILE`) and secret files (`--secret-file` and the like).
//!
//! The config file is TOML. Its keys are the long flags of the command it is given to,
//! written with `_` for `-` (`http_listen` for `--http-listen`), and each value becomes
//! that flag's default: the environment and the command line override the file, the
//! file the built-in defaults. A key no flag has (or a test-only, hidden one), a value of
//! the wrong kind, or one the flag refuses stops the start with an error naming the file
//! and the key. `deploy/sfu.example.toml` has every key, with its default.
//!
//! The server's file may also hold the groups' calling policies, one table each
//! (`[groups.NAME]`, read by [`groups`] at the start and on SIGHUP): they are not flags.
//!
//! TOML rather than YAML: comments, one way to write each value (YAML reads `no`, `off`
//! or `0755` as something else than the string they look like), and a parser kept in the
//! Rust ecosystem's own tooling (`toml`, Cargo's), where serde_yaml is unmaintained.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use protocol::Policy;

use crate::cli::{Cli, Command};

/// The id (and long flag) of the config file's option, in each command that has one.
pub const CONFIG: &str = "config";

/// The command line `args` (the program's name first), with the config file applied
/// where one is given. A clap error (usage, `--help`, `--version`) comes back as
/// [`clap::Error`] inside the error, for the caller to print and exit with.
pub fn parse(args: Vec<OsString>) -> anyhow::Result<Cli> {
    let cmd = Cli::command();
    // A first pass that fails on nothing, to find the file (which may give values a
    // strict pass would miss); the strict pass below reports what is wrong.
    let found = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&args)
        .ok()
        .and_then(|m| config_of(&m));
    let cmd = match found {
        None => cmd,
        Some((None, path)) => {
            let defaults = defaults(&cmd, &flags_of(load(&path)?, true), &path)?;
            with_defaults(cmd, defaults)
        }
        Some((Some(name), path)) => {
            let sub = cmd
                .find_subcommand(&name)
                .ok_or_else(|| anyhow!("no command {name}"))?;
            let table = flags_of(load(&path)?, name == "serve");
            let defaults = defaults(sub, &table, &path)?;
            cmd.mut_subcommand(name, |sub| with_defaults(sub, defaults))
        }
    };
    let matches = cmd.try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let sub = matches.subcommand().map_or(&matches, |(_, m)| m);
    let serve = match &mut cli.command {
        None => Some(&mut cli.serve),
        Some(Command::Serve(s)) => Some(s),
        Some(Command::Token(t)) => {
            keep_higher(sub, &mut t.secret, &mut t.secret_file, "secret");
            None
        }
        Some(Command::Turn(_) | Command::Admin(_)) => None,
    };
    if let Some(s) = serve {
        keep_higher(sub, &mut s.secret, &mut s.secret_file, "secret");
        let turn = (&mut s.turn_auth_secret, &mut s.turn_auth_secret_file);
        keep_higher(sub, turn.0, turn.1, "turn_auth_secret");
        keep_higher(
            sub,
            &mut s.admin_secret,
            &mut s.admin_secret_file,
            "admin_secret",
        );
        keep_higher(
            sub,
            &mut s.webhook_secret,
            &mut s.webhook_secret_file,
            "webhook_secret",
        );
    }
    Ok(cli)
}

/// A secret given both as itself (`id`) and as a file (`id`_file) from sources of
/// different rank keeps the higher's: the command line over the environment over the
/// config file. From the same one, both stay, and the start refuses them ([`secret`]).
fn keep_higher<T>(m: &ArgMatches, value: &mut Option<String>, file: &mut Option<T>, id: &str) {
    let rank = |id: &str| match m.value_source(id) {
        Some(ValueSource::CommandLine) => 3,
        Some(ValueSource::EnvVariable) => 2,
        Some(ValueSource::DefaultValue) => 1,
        _ => 0,
    };
    let (of_value, of_file) = (rank(id), rank(&format!("{id}_file")));
    if value.is_some() && file.is_some() && of_value != of_file {
        if of_value > of_file {
            *file = None;
        } else {
            *value = None;
        }
    }
}

/// The config file given, and the subcommand it was given to (none: the top level).
fn config_of(m: &ArgMatches) -> Option<(Option<String>, PathBuf)> {
    let (name, m) = match m.subcommand() {
        Some((name, sub)) => (Some(name.to_string()), sub),
        None => (None, m),
    };
    let path = m.try_get_one::<PathBuf>(CONFIG).ok().flatten()?;
    Some((name, path.clone()))
}

/// The table the file gives a command: its flags, and for the server its `[groups]` too
/// ([`groups`] reads them), which are not flags.
const GROUPS: &str = "groups";

/// The keys of `table` that set flags: all of them, but the server's `[groups]`.
fn flags_of(mut table: toml::Table, serve: bool) -> toml::Table {
    if serve {
        table.remove(GROUPS);
    }
    table
}

/// The calling policies of the config file's `[groups.NAME]` tables (none: no groups
/// but the default, which allows what tokens grant). A key no policy has, or a value of
/// the wrong kind, is an error that names the file and the group.
pub fn groups(path: &Path) -> anyhow::Result<BTreeMap<String, Policy>> {
    let file = path.display();
    let Some(value) = load(path)?.remove(GROUPS) else {
        return Ok(BTreeMap::new());
    };
    let toml::Value::Table(table) = value else {
        bail!("config file {file}: `{GROUPS}` must be a table of groups ([groups.NAME])");
    };
    let mut groups = BTreeMap::new();
    for (name, policy) in table {
        let policy: Policy = policy
            .try_into()
            .map_err(|e| anyhow!("config file {file}: [groups.{name}]: {}", e.message()))?;
        groups.insert(name, policy);
    }
    Ok(groups)
}

fn load(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("the config file {} is not valid TOML", path.display()))
}

/// Each key of `table` as the id of the flag of `cmd` it sets, and its values, checked
/// by that flag's parser.
fn defaults(
    cmd: &clap::Command,
    table: &toml::Table,
    path: &Path,
) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let file = path.display();
    let mut out = Vec::new();
    for (key, value) in table {
        let arg = flag_of(cmd, key).ok_or_else(|| {
            let hint = if key.contains('-') {
                format!(" (keys are written with `_`: `{}`)", key.replace('-', "_"))
            } else {
                String::new()
            };
            anyhow!("config file {file}: unknown key `{key}`{hint}")
        })?;
        let values = strings(value).ok_or_else(|| {
            anyhow!(
                "config file {file}: `{key}` takes a string, number or boolean, or a list of them"
            )
        })?;
        let many = matches!(arg.get_action(), ArgAction::Append);
        if !many && (values.len() != 1 || value.is_array()) {
            bail!("config file {file}: `{key}` takes one value, not a list");
        }
        for v in &values {
            check_value(arg, v)
                .map_err(|e| anyhow!("config file {file}: `{key} = {value}`: {}", reason(&e)))?;
        }
        out.push((arg.get_id().to_string(), values));
    }
    Ok(out)
}

/// The flag `key` names: a long flag the file may set (not the file itself, nor a
/// hidden, test-only one).
fn flag_of<'c>(cmd: &'c clap::Command, key: &str) -> Option<&'c Arg> {
    if key.contains('-') || key == CONFIG {
        return None;
    }
    let long = key.replace('_', "-");
    cmd.get_arguments().find(|a| {
        a.get_long() == Some(long.as_str())
            && !a.is_hide_set()
            && matches!(
                a.get_action(),
                ArgAction::Set | ArgAction::Append | ArgAction::SetTrue | ArgAction::SetFalse
            )
    })
}

/// Whether `arg`'s parser takes `value`, as it would from the command line. (The whole
/// command's pass takes defaults without a word of where they came from.)
fn check_value(arg: &Arg, value: &str) -> Result<(), clap::Error> {
    let long = arg.get_long().unwrap_or("value").to_string();
    let mut probe = Arg::new("value")
        .long(long.clone())
        .value_parser(arg.get_value_parser().clone())
        .action(ArgAction::Append);
    if let Some(names) = arg.get_value_names() {
        probe = probe.value_names(names.iter().cloned());
    }
    if let Some(delimiter) = arg.get_value_delimiter() {
        probe = probe.value_delimiter(delimiter);
    }
    let mut flag = OsString::from(format!("--{long}="));
    flag.push(value);
    clap::Command::new("sfu")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from([flag])
        .map(|_| ())
}

/// A TOML value as the strings a flag would be given: a scalar, or a list of them.
fn strings(value: &toml::Value) -> Option<Vec<String>> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect(),
        v => scalar(v).map(|s| vec![s]),
    }
}

/// What a clap error says, without its `error:` and the usage that follows.
fn reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// The file's values as defaults, which `--help` does not show: they may be secrets.
fn with_defaults(cmd: clap::Command, defaults: Vec<(String, Vec<String>)>) -> clap::Command {
    defaults.into_iter().fold(cmd, |cmd, (id, values)| {
        cmd.mut_arg(id, |a| {
            // (A switch takes no value, and shows no default.)
            let hide = matches!(a.get_action(), ArgAction::Set | ArgAction::Append);
            a.default_values(values).hide_default_value(hide)
        })
    })
}

/// A secret given either as itself (`value`, from `flag`) or as the first line of a
/// file (from `flag`-file), not both; none if neither.
pub fn secret(
    value: Option<String>,
    file: Option<&Path>,
    flag: &str,
) -> anyhow::Result<Option<String>> {
    let Some(path) = file else {
        return Ok(value);
    };
    if value.is_some() {
        bail!("both --{flag} and --{flag}-file are given (or their variables or keys): keep one");
    }
    read_secret(path).map(Some)
}

/// The first line of a secret file, which must not be empty. Warns when others than its
/// owner may read it.
pub fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    let line = text.lines().next().unwrap_or_default().trim_end();
    if line.is_empty() {
        bail!("the secret file {} is empty", path.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the secret file {} may be read by others than its owner (mode {:o}): \
                 chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(line.to_string())
}

#[cfg(test)]
mod tests;
