//! The command line of `sfu admin`: admin tokens, webhook secrets, and the admin API's
//! requests (`admin_client` makes them), with the parsers of their values.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Subcommand, ValueEnum};
use protocol::{ParticipantId, Policy, TrackId};

use super::parse_duration;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Print an admin token (for `Authorization: Bearer` on `/admin/...`), signed with
    /// the server's admin secret.
    Token(AdminTokenArgs),
    /// Print a new webhook secret (for --webhook-secret-file, and the receivers).
    WebhookSecret,
    #[command(flatten)]
    Request(AdminRequest),
}

/// The admin API's requests, each a subcommand of `sfu admin` (`admin_client`).
#[derive(Subcommand, Debug)]
pub enum AdminRequest {
    /// List the calls in progress.
    Rooms {
        #[command(flatten)]
        api: AdminApi,
    },
    /// Show a call in progress and who is in it.
    Room {
        /// The room's name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        room: String,
        #[command(flatten)]
        api: AdminApi,
    },
    /// List the participants of a call, with their tracks' ids.
    Participants {
        /// The room's name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        room: String,
        #[command(flatten)]
        api: AdminApi,
    },
    /// Remove a participant from a call (it is told: `left`, reason `removed`).
    Remove {
        /// The room's name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        room: String,
        /// The participant's id (`p7`, or `7`), as `participants` lists it.
        #[arg(value_parser = parse_participant_id)]
        participant_id: ParticipantId,
        #[command(flatten)]
        api: AdminApi,
    },
    /// Mute a track for everyone (its publisher may unmute it).
    Mute {
        /// The room's name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        room: String,
        /// The track's id (`t12`, or `12`), as `participants` lists it.
        #[arg(value_parser = parse_track_id)]
        track_id: TrackId,
        /// Unmute it instead.
        #[arg(long)]
        unmute: bool,
        #[command(flatten)]
        api: AdminApi,
    },
    /// Unpublish a track (its publisher may publish again).
    Unpublish {
        /// The room's name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        room: String,
        /// The track's id (`t12`, or `12`), as `participants` lists it.
        #[arg(value_parser = parse_track_id)]
        track_id: TrackId,
        #[command(flatten)]
        api: AdminApi,
    },
    /// End a call for everyone in it.
    End {
        /// The room's name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        room: String,
        #[command(flatten)]
        api: AdminApi,
    },
    /// List the groups and their calling policies.
    Groups {
        #[command(flatten)]
        api: AdminApi,
    },
    /// Show a group's calling policy.
    Group {
        /// The group's name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        group: String,
        #[command(flatten)]
        api: AdminApi,
    },
    /// Set a group's calling policy (adding the group if new).
    ///
    /// The switches given change its current policy (the default one for a new group),
    /// the others stay. Lasts until the server's config file is reloaded or the server
    /// restarts: write it there to keep it.
    SetGroup {
        /// The group's name: 1 to 64 letters, digits, `-`, `_` or `.`.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        group: String,
        #[command(flatten)]
        switches: PolicySwitches,
        /// The whole policy as JSON (`{"video": false}`: what it leaves out takes its
        /// default), instead of the group's current one; the switches apply to it.
        #[arg(long, value_name = "JSON", value_parser = parse_policy)]
        policy: Option<Policy>,
        #[command(flatten)]
        api: AdminApi,
    },
    /// Remove a group (not the default one).
    ///
    /// Tokens that name it are refused from then on; its members' calls in progress go
    /// on.
    RemoveGroup {
        /// The group's name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        group: String,
        #[command(flatten)]
        api: AdminApi,
    },
    /// List the records of finished calls, newest first.
    Records {
        /// Only this room's.
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        room: Option<String>,
        /// At most this many (the server's default: 100; 1000 at most).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[command(flatten)]
        api: AdminApi,
    },
    /// Drain the server, as SIGTERM does.
    ///
    /// It takes no new calls, and stops once the calls in progress end (or its
    /// --drain-timeout runs out).
    Drain {
        #[command(flatten)]
        api: AdminApi,
    },
}

impl AdminRequest {
    /// Where the request goes, as whom, and how its answer is printed.
    pub fn api(&self) -> &AdminApi {
        match self {
            AdminRequest::Rooms { api }
            | AdminRequest::Room { api, .. }
            | AdminRequest::Participants { api, .. }
            | AdminRequest::Remove { api, .. }
            | AdminRequest::Mute { api, .. }
            | AdminRequest::Unpublish { api, .. }
            | AdminRequest::End { api, .. }
            | AdminRequest::Groups { api }
            | AdminRequest::Group { api, .. }
            | AdminRequest::SetGroup { api, .. }
            | AdminRequest::RemoveGroup { api, .. }
            | AdminRequest::Records { api, .. }
            | AdminRequest::Drain { api } => api,
        }
    }
}

// How the admin API is reached, as whom, and how its answers are printed: shared by
// every request of `sfu admin`.
#[derive(Args, Debug)]
pub struct AdminApi {
    /// The server's URL, http or https (a path after the host is kept: a reverse
    /// proxy's prefix).
    #[arg(
        long,
        env = "SFU_URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = parse_base_url
    )]
    pub url: String,
    /// An admin token (`sfu admin token`), used rather than the admin secret [default:
    /// one made from the admin secret for each command, valid 5 minutes].
    #[arg(long, env = "SFU_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The server's admin secret, which signs the token (without --token).
    #[arg(long, env = "SFU_ADMIN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// File holding the server's admin secret (its first line).
    #[arg(long, env = "SFU_ADMIN_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Who acts, in the token made from the secret: named in the server's log of each
    /// action [default: $USER, or admin-cli].
    #[arg(long)]
    pub identity: Option<String>,
    /// PEM file of the CA certificates to trust for https, instead of the system's.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Print the server's JSON answer (pretty; nothing when it has none) instead of a
    /// table or a sentence.
    #[arg(long)]
    pub json: bool,
}

// The switches of a group's policy that `sfu admin set-group` changes: each one given
// is set, the others left as they are.
#[derive(Args, Debug)]
pub struct PolicySwitches {
    /// May take part in calls at all (off: members in calls are removed).
    #[arg(long, value_enum, value_name = "on|off")]
    pub calling: Option<Switch>,
    /// May publish video, camera and screen (off: those tracks are unpublished).
    #[arg(long, value_enum, value_name = "on|off")]
    pub video: Option<Switch>,
    /// May share the screen (with video on).
    #[arg(long, value_enum, value_name = "on|off")]
    pub screen_share: Option<Switch>,
    /// May present to an audience (join as `presenter`).
    #[arg(long, value_enum, value_name = "on|off")]
    pub broadcast: Option<Switch>,
    /// Offer clients only TCP paths, from their next join on.
    #[arg(long, value_enum, value_name = "on|off")]
    pub force_tcp: Option<Switch>,
    /// No member may send media in the clear.
    #[arg(long, value_enum, value_name = "on|off")]
    pub e2ee_required: Option<Switch>,
    /// Most participants (viewers apart) in a room a member opens; `none`: the server's
    /// --room-capacity.
    #[arg(long, value_name = "N|none", value_parser = parse_participant_limit)]
    pub max_participants: Option<ParticipantLimit>,
}

impl PolicySwitches {
    /// `policy` with the switches given set.
    pub fn apply(&self, mut policy: Policy) -> Policy {
        let set = |field: &mut bool, switch: Option<Switch>| {
            if let Some(s) = switch {
                *field = s == Switch::On;
            }
        };
        set(&mut policy.calling, self.calling);
        set(&mut policy.video, self.video);
        set(&mut policy.screen_share, self.screen_share);
        set(&mut policy.broadcast, self.broadcast);
        set(&mut policy.force_tcp, self.force_tcp);
        set(&mut policy.e2ee_required, self.e2ee_required);
        if let Some(ParticipantLimit(limit)) = self.max_participants {
            policy.max_participants = limit;
        }
        policy
    }
}

/// A switch of a policy.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

/// `--max-participants`: a number, or `None` for the server's room capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParticipantLimit(pub Option<u32>);

#[derive(Args, Debug)]
pub struct AdminTokenArgs {
    /// Who acts: named in the server's log of each action.
    #[arg(long)]
    pub identity: String,
    /// Lifetime: seconds, or a number with s, m, h or d; 30 days at most.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// The server's admin secret.
    #[arg(long, env = "SFU_ADMIN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// File holding the server's admin secret (its first line).
    #[arg(long, env = "SFU_ADMIN_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
}

/// `--url`: an absolute http or https URL without credentials, query or fragment; given
/// back without its trailing `/`, for paths to be appended to.
fn parse_base_url(s: &str) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
    if !matches!(scheme.as_deref(), Some("http" | "https")) {
        return Err(format!(
            "{s:?}: the URL must start with http:// or https://"
        ));
    }
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return Err(format!("{s:?}: the URL names no host"));
    };
    if authority.as_str().contains('@') {
        return Err("user names and passwords in the URL are not supported".into());
    }
    if uri.query().is_some() || s.contains('#') {
        return Err(format!("{s:?}: the URL must have no query or fragment"));
    }
    let path = uri.path().trim_end_matches('/');
    Ok(format!(
        "{}://{authority}{path}",
        scheme.unwrap_or_default()
    ))
}

/// A participant's id as the server shows it (`p7`) or as its number.
fn parse_participant_id(s: &str) -> Result<ParticipantId, String> {
    id_number(s, 'p').map(ParticipantId)
}

/// A track's id as the server shows it (`t12`) or as its number.
fn parse_track_id(s: &str) -> Result<TrackId, String> {
    id_number(s, 't').map(TrackId)
}

fn id_number(s: &str, prefix: char) -> Result<u64, String> {
    let digits = s.strip_prefix(prefix).unwrap_or(s);
    digits
        .parse()
        .map_err(|_| format!("{s:?} is not an id: {prefix}7, or 7"))
}

/// `--max-participants`: at least 1, or `none`.
fn parse_participant_limit(s: &str) -> Result<ParticipantLimit, String> {
    if s == "none" {
        return Ok(ParticipantLimit(None));
    }
    match s.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(ParticipantLimit(Some(n))),
        _ => Err(format!(
            "{s:?} is not a number of participants (1 or more) or `none`"
        )),
    }
}

/// `--policy`: a whole policy, as JSON.
fn parse_policy(s: &str) -> Result<Policy, String> {
    serde_json::from_str(s).map_err(|e| format!("not a policy: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn parses_admin_api_urls_and_ids() {
        let url = |s| parse_base_url(s);
        assert_eq!(
            url("http://127.0.0.1:8080"),
            Ok("http://127.0.0.1:8080".into())
        );
        assert_eq!(
            url("HTTPS://sfu.example/calls/"),
            Ok("https://sfu.example/calls".into())
        );
        for bad in [
            "127.0.0.1:8080",
            "ftp://a/",
            "http://u:p@a/",
            "http://a/?x=1",
            "http://a/#x",
            "/admin",
        ] {
            assert!(url(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_participant_id("p7"), Ok(ParticipantId(7)));
        assert_eq!(parse_participant_id("7"), Ok(ParticipantId(7)));
        assert!(parse_participant_id("t7").is_err());
        assert_eq!(parse_track_id("t12"), Ok(TrackId(12)));
        assert!(parse_track_id("").is_err());
        assert_eq!(parse_participant_limit("none"), Ok(ParticipantLimit(None)));
        assert_eq!(parse_participant_limit("3"), Ok(ParticipantLimit(Some(3))));
        assert!(parse_participant_limit("0").is_err());
    }

    #[test]
    fn set_group_changes_only_the_switches_given() {
        let cli = Cli::try_parse_from([
            "sfu",
            "admin",
            "set-group",
            "sales",
            "--video",
            "off",
            "--max-participants",
            "12",
            "--policy",
            r#"{"force_tcp": true}"#,
        ])
        .unwrap();
        let Some(Command::Admin(AdminCommand::Request(AdminRequest::SetGroup {
            group,
            switches,
            policy,
            api,
        }))) = cli.command
        else {
            panic!("not set-group");
        };
        assert_eq!(group, "sales");
        let policy = switches.apply(policy.unwrap());
        let expected = Policy {
            video: false,
            force_tcp: true,
            max_participants: Some(12),
            ..Policy::default()
        };
        assert_eq!(policy, expected);
        assert!(!api.json);
        let bad = ["sfu", "admin", "set-group", "s", "--video", "maybe"];
        assert!(Cli::try_parse_from(bad).is_err());
        let bad = [
            "sfu",
            "admin",
            "set-group",
            "s",
            "--policy",
            r#"{"vidoe":1}"#,
        ];
        assert!(Cli::try_parse_from(bad).is_err());
    }
}
