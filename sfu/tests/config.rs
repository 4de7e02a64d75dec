//! The server started with a config file: the sample (`deploy/sfu.example.toml`), and
//! files with a mistake that each stop the start with an error naming it. Runs in a
//! network namespace of its own (root, as the end-to-end tests): the sample's addresses
//! (0.0.0.0:8080, the media and TURN ports) are taken nowhere else.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Namespace, Running};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/sfu.example.toml");

/// A file of this test's, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("sfu-config-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `curl` of `url` inside `ns`: its status code and body.
fn get(ns: &Namespace, url: &str) -> (u16, String) {
    admin_get(ns, url, None)
}

/// `curl` of `url` inside `ns`, with an admin token if given: its status code and body.
fn admin_get(ns: &Namespace, url: &str, token: Option<&str>) -> (u16, String) {
    let mut curl = ns.command("curl");
    curl.args(["-s", "--max-time", "5", "-w", "\n%{http_code}"]);
    if let Some(token) = token {
        curl.arg("-H").arg(format!("Authorization: Bearer {token}"));
    }
    let out = curl.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_sample_config_starts_the_server() {
    let ns = Namespace::new("config");
    let secret = TempFile::new("secret", "a-secret-of-this-test\n");
    let log = TempFile::new("sample.log", "");
    // The sample as shipped; only its secret file is this test's (a flag beats the file)
    // and its media ports (the environment beats it too).
    let server = ns
        .command(env!("CARGO_BIN_EXE_sfu"))
        .args(["--config", SAMPLE, "--secret-file", secret.path()])
        .env_remove("SFU_LOG")
        .env("SFU_UDP_PORTS", "17100-17103")
        .stdout(std::fs::File::create(&log.0).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Running(server);
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&ns, "http://127.0.0.1:8080/healthz").0 != 200 {
        if let Ok(Some(status)) = server.0.try_wait() {
            let why = std::fs::read_to_string(&log.0).unwrap_or_default();
            panic!("the server exited ({status}):\n{why}");
        }
        assert!(
            Instant::now() < deadline,
            "the server did not become healthy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log.0).unwrap();
    assert!(
        text.contains("media candidates advertise [203.0.113.10]"),
        "the sample's advertise_ip is used:\n{text}"
    );
    assert!(
        !text.contains("DEV MODE"),
        "the secret file is read:\n{text}"
    );
    assert!(
        text.contains("UDP ports 17100, 17102") && !text.contains("UDP ports 16384"),
        "the environment's ports, not the file's:\n{text}"
    );
    // Not in dev mode: no token for anyone.
    let (code, _) = get(&ns, "http://127.0.0.1:8080/dev/token?room=r&identity=i");
    assert_ne!(code, 200, "dev tokens are off with a secret");
}

/// The server started in `ns` with a config file of `text` (and `args`): it must exit at
/// once, unsuccessfully; what it wrote to stderr.
fn refused(ns: &Namespace, text: &str, args: &[&str]) -> String {
    let file = TempFile::new("refused.toml", text);
    let out = ns
        .command("timeout")
        .args(["20", env!("CARGO_BIN_EXE_sfu"), "--config", file.path()])
        .args(args)
        .env_remove("SFU_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "refused at start:\n{err}");
    err
}

#[test]
fn groups_reload_on_sighup_and_a_bad_file_keeps_them() {
    let ns = Namespace::new("config-groups");
    let config = TempFile::new(
        "groups.toml",
        "http_listen = \"127.0.0.1:8084\"\nudp_ports = \"17110-17111\"\nsecret = \"join\"\n\
         admin_secret = \"admin\"\n\n[groups.audio]\nvideo = false\n",
    );
    let log = TempFile::new("groups.log", "");
    let server = ns
        .command(env!("CARGO_BIN_EXE_sfu"))
        .args(["--config", config.path()])
        .env_remove("SFU_LOG")
        .stdout(std::fs::File::create(&log.0).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Running(server);
    let key = signaling::admin::AdminKey::new(b"admin");
    let token = key
        .issue(&signaling::admin::AdminKey::claims(
            "test",
            Duration::from_secs(300),
        ))
        .unwrap();
    let groups = || {
        let (code, body) = admin_get(&ns, "http://127.0.0.1:8084/admin/groups", Some(&token));
        (code == 200).then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap())
    };
    // Polls until `want` holds of the groups, for at most 10 s.
    let until = |what: &str, want: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = groups();
            if seen.as_ref().is_some_and(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {seen:?}\n{}",
                std::fs::read_to_string(&log.0).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    until("the config's groups", &|g| {
        g["groups"]["audio"]["video"] == false
    });
    // A new file: audio changed, tcp added.
    std::fs::write(
        &config.0,
        "http_listen = \"127.0.0.1:8084\"\nudp_ports = \"17110-17111\"\nsecret = \"join\"\n\
         admin_secret = \"admin\"\n\n[groups.audio]\nvideo = true\n\n[groups.tcp]\nforce_tcp = true\n",
    )
    .unwrap();
    server.signal("HUP");
    until("the reloaded groups", &|g| {
        g["groups"]["audio"]["video"] == true && g["groups"]["tcp"]["force_tcp"] == true
    });
    // A file that does not read keeps them, and the server goes on.
    std::fs::write(&config.0, "[groups.tcp]\nforce_tpc = true\n").unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log.0)
        .unwrap_or_default()
        .contains("groups kept")
    {
        assert!(Instant::now() < deadline, "the bad reload is logged");
        std::thread::sleep(Duration::from_millis(100));
    }
    until("the groups as they were", &|g| {
        g["groups"]["tcp"]["force_tcp"] == true
    });
    let text = std::fs::read_to_string(&log.0).unwrap();
    assert!(
        text.contains("force_tpc"),
        "the log names the bad key:\n{text}"
    );
}

#[test]
fn mistakes_in_the_config_stop_the_start_naming_them() {
    let ns = Namespace::new("config-bad");
    let err = refused(
        &ns,
        "http_listen = \"127.0.0.1:8081\"\nroom_capasity = 9\n",
        &[],
    );
    assert!(err.contains("unknown key `room_capasity`"), "{err}");
    let err = refused(&ns, "udp_ports = \"16584-16384\"\n", &[]);
    assert!(
        err.contains("`udp_ports = \"16584-16384\"`") && err.contains("not a port range"),
        "{err}"
    );
    let err = refused(
        &ns,
        "turn_tls_listen = \"127.0.0.1:5349\"\nturn_cert = \"/nonexistent/cert.pem\"\n\
         turn_key = \"/nonexistent/key.pem\"\nturn_tls_host = \"turn.example\"\n",
        &["--http-listen", "127.0.0.1:8082"],
    );
    assert!(err.contains("certificate /nonexistent/cert.pem"), "{err}");
    let err = refused(
        &ns,
        "http_cert = \"/nonexistent/https.pem\"\nhttp_key = \"/nonexistent/key.pem\"\n",
        &["--http-listen", "127.0.0.1:8083"],
    );
    assert!(err.contains("certificate /nonexistent/https.pem"), "{err}");
    let err = refused(&ns, "http_cert = \"/etc/c.pem\"\n", &[]);
    assert!(err.contains("--http-cert needs --http-key"), "{err}");
    let err = refused(&ns, "secret = \"same\"\nadmin_secret = \"same\"\n", &[]);
    assert!(
        err.contains("the admin secret is the join tokens' secret"),
        "{err}"
    );
    // TLS without what it needs, wherever each part comes from.
    let err = refused(&ns, "turn_tls_listen = \"127.0.0.1:5349\"\n", &[]);
    assert!(err.contains("--turn-tls-listen needs"), "{err}");
    // A secret given twice at one level is refused; at two, the higher wins (here the
    // flag's file, which does not exist).
    let err = refused(&ns, "secret = \"x\"\nsecret_file = \"/etc/s\"\n", &[]);
    assert!(err.contains("both --secret and --secret-file"), "{err}");
    let err = refused(
        &ns,
        "secret = \"x\"\n",
        &["--secret-file", "/nonexistent/s"],
    );
    assert!(
        err.contains("cannot read the secret file /nonexistent/s"),
        "{err}"
    );
    // The command line is still checked as strictly as without a file.
    let out = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .args(["--config", SAMPLE, "--udp-ports", "7-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a port range"));
}
