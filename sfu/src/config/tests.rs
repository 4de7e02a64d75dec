#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::cli::Command as Sub;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/sfu.example.toml");

/// A config file holding `text`, removed when dropped.
struct File(PathBuf);

impl File {
    fn new(text: &str) -> File {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("sfu-config-{}-{n}.toml", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        File(path)
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run(args: &[&str]) -> anyhow::Result<Cli> {
    parse(
        std::iter::once("sfu")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect(),
    )
}

/// The error of starting with a config file of `text`.
fn refused(text: &str) -> String {
    let file = File::new(text);
    let err = run(&["--config", file.0.to_str().unwrap()]).unwrap_err();
    assert!(err.downcast_ref::<clap::Error>().is_none(), "{err}");
    format!("{err:#}")
}

#[test]
fn the_file_sets_defaults_and_flags_override_it() {
    let file = File::new(
        "udp_ports = \"20000-20009\"\nroom_capacity = 12\nadvertise_ip = [\"192.0.2.1\", \
         \"192.0.2.2\"]\nno_ice_tcp = true\nturn = false\njoins_per_address = 2.5\n",
    );
    let path = file.0.to_str().unwrap();
    let cli = run(&["--config", path]).unwrap();
    let s = &cli.serve;
    assert_eq!(s.udp_ports, 20000..=20009);
    assert_eq!(s.room_capacity, 12);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(s.advertise_ip, [ip("192.0.2.1"), ip("192.0.2.2")]);
    assert!(s.no_ice_tcp);
    assert!(!s.turn);
    assert!((s.joins_per_address - 2.5).abs() < f64::EPSILON);
    assert_eq!(s.last_n, 25, "what the file leaves out keeps its default");
    // A flag beats the file, before or after --config.
    let cli = run(&[
        "--room-capacity",
        "5",
        "--config",
        path,
        "--advertise-ip",
        "192.0.2.9",
    ])
    .unwrap();
    assert_eq!(cli.serve.room_capacity, 5);
    assert_eq!(cli.serve.advertise_ip, [ip("192.0.2.9")]);
    assert_eq!(cli.serve.udp_ports, 20000..=20009);
    // The `serve` command takes it as well.
    let cli = run(&["serve", "--config", path]).unwrap();
    let Some(Sub::Serve(s)) = cli.command else {
        panic!("not serve");
    };
    assert_eq!(s.room_capacity, 12);
}

#[test]
fn the_relay_command_takes_its_own_names() {
    let file = File::new("relay_ports = \"6000-6001\"\nlisten = [\"192.0.2.2:3478\"]\n");
    let cli = run(&["turn", "--config", file.0.to_str().unwrap()]).unwrap();
    let Some(Sub::Turn(t)) = cli.command else {
        panic!("not turn");
    };
    assert_eq!(t.relay_ports.relay_ports, 6000..=6001);
    assert_eq!(
        t.listen.listen,
        ["192.0.2.2:3478".parse::<SocketAddr>().unwrap()]
    );
    // The server's name of that setting is not the relay's.
    let err = refused("relay_ports = \"6000-6001\"\n");
    assert!(err.contains("unknown key `relay_ports`"), "{err}");
}

#[test]
fn what_is_wrong_in_the_file_is_named() {
    // Each file, and what its error must say.
    let cases = [
        ("udp_portz = \"1-2\"\n", vec!["unknown key `udp_portz`"]),
        (
            "udp-ports = \"1-2\"\n",
            vec!["written with `_`: `udp_ports`"],
        ),
        (
            "udp_ports = \"9000-8000\"\n",
            vec!["`udp_ports = \"9000-8000\"`", "not a port range"],
        ),
        (
            "room_capacity = \"many\"\n",
            vec!["`room_capacity = \"many\"`"],
        ),
        (
            "room_capacity = [1, 2]\n",
            vec!["`room_capacity` takes one value"],
        ),
        ("[turn]\nlisten = 1\n", vec!["`turn` takes a string"]),
        // Test-only flags stay off, and a file names no other file.
        ("tap = \"/tmp/x\"\n", vec!["unknown key `tap`"]),
        ("config = \"other.toml\"\n", vec!["unknown key `config`"]),
        ("http_listen = \n", vec!["not valid TOML"]),
    ];
    for (text, says) in cases {
        let err = refused(text);
        for s in says {
            assert!(err.contains(s), "{text:?}: {err}");
        }
    }
    let err = run(&["--config", "/nonexistent/sfu.toml"]).unwrap_err();
    assert!(format!("{err:#}").contains("cannot read the config file /nonexistent"));
}

#[test]
fn the_sample_has_every_key_and_its_values_parse() {
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    let cli = run(&["--config", SAMPLE]).unwrap();
    assert_eq!(
        cli.serve.secret_file.as_deref(),
        Some(Path::new("/etc/sfu/secret"))
    );
    // Every flag a file may set is in it, set or commented out.
    let cmd = Cli::command();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let key = long.replace('-', "_");
        if flag_of(&cmd, &key).is_none() {
            continue;
        }
        let set = format!("\n{key} = ");
        let commented = format!("\n# {key} = ");
        assert!(
            text.contains(&set) || text.contains(&commented),
            "the sample lacks `{key}`"
        );
    }
    // Its commented-out values are good values too (and none is set twice).
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| flag_of(&cmd, k).is_some()) =>
            {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let file = File::new(&uncommented);
    let cli = run(&["--config", file.0.to_str().unwrap()]).unwrap();
    assert_eq!(cli.serve.turn_tls_host.as_deref(), Some("turn.example.org"));
}

#[test]
fn a_secret_from_a_higher_source_wins_and_defaults_are_not_shown() {
    let file = File::new("secret_file = \"/etc/sfu/secret\"\nturn_auth_secret = \"t0p\"\n");
    let path = file.0.to_str().unwrap();
    // The flag's secret beats the file's secret file; the file's own pair stays.
    let cli = run(&["--config", path, "--secret", "flag"]).unwrap();
    assert_eq!(cli.serve.secret.as_deref(), Some("flag"));
    assert_eq!(cli.serve.secret_file, None);
    assert_eq!(cli.serve.turn_auth_secret.as_deref(), Some("t0p"));
    let cli = run(&["--config", path, "--turn-auth-secret-file", "/f"]).unwrap();
    assert_eq!(cli.serve.turn_auth_secret, None);
    assert_eq!(
        cli.serve.turn_auth_secret_file.as_deref(),
        Some(Path::new("/f"))
    );
    // `--help` with the file shows none of its values.
    let help = run(&["--config", path, "--help"]).unwrap_err();
    let help = help
        .downcast_ref::<clap::Error>()
        .unwrap()
        .render()
        .to_string();
    assert!(help.contains("--turn-auth-secret"), "{help}");
    assert!(!help.contains("t0p"), "{help}");
}

#[test]
fn a_secret_comes_from_one_place() {
    let file = File::new("s3cret\nignored\n");
    let path = Some(file.0.as_path());
    assert_eq!(
        secret(None, path, "secret").unwrap().as_deref(),
        Some("s3cret")
    );
    assert_eq!(
        secret(Some("x".into()), None, "secret").unwrap().as_deref(),
        Some("x")
    );
    assert_eq!(secret(None, None, "secret").unwrap(), None);
    let both = secret(Some("x".into()), path, "secret").unwrap_err();
    assert!(
        both.to_string().contains("both --secret and --secret-file"),
        "{both}"
    );
    let empty = File::new("\n");
    let err = read_secret(&empty.0).unwrap_err();
    assert!(err.to_string().contains("is empty"), "{err}");
    let err = read_secret(Path::new("/nonexistent/secret")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/secret"), "{err}");
}

#[test]
fn groups_are_read_apart_from_the_flags_and_checked() {
    let file = File::new(
        "http_listen = \"127.0.0.1:9\"\n\n[groups.audio]\nvideo = false\n\n[groups.tcp]\nforce_tcp = true\nmax_participants = 8\n",
    );
    let path = file.0.to_str().unwrap();
    // The flags still read; the groups are not flags.
    let cli = run(&["--config", path]).unwrap();
    assert_eq!(
        cli.serve.http_listen,
        Some("127.0.0.1:9".parse::<SocketAddr>().unwrap())
    );
    let read = groups(&file.0).unwrap();
    assert_eq!(read.len(), 2);
    assert!(!read["audio"].video && read["audio"].calling);
    assert!(read["tcp"].force_tcp && read["tcp"].max_participants == Some(8));
    // A key no policy has names the file and the group.
    let bad = File::new("[groups.audio]\nvidoe = false\n");
    let e = groups(&bad.0).unwrap_err().to_string();
    assert!(e.contains("[groups.audio]") && e.contains("vidoe"), "{e}");
    let bad = File::new("[groups.audio]\nvideo = \"no\"\n");
    assert!(groups(&bad.0).is_err());
    let bad = File::new("groups = 3\n");
    assert!(groups(&bad.0).unwrap_err().to_string().contains("table"));
    // Only the server has groups: `sfu turn --config` refuses them as an unknown key.
    let turn = File::new("[groups.audio]\nvideo = false\n");
    let e = run(&["turn", "--config", turn.0.to_str().unwrap()]).unwrap_err();
    assert!(e.to_string().contains("unknown key `groups`"), "{e}");
}
