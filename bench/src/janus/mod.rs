//! Janus, the other server a run can load (`--target janus`): Debian's `janus` with its
//! VideoRoom plugin, started by the bench on loopback with a configuration it writes
//! (only the VideoRoom plugin and the WebSocket transport loaded, ICE on 127.0.0.1, a UDP
//! range of its own; every other setting Janus's default), pinned to the CPUs our server
//! would have, sampled from /proc, stopped when dropped. Janus never gathers candidates on
//! a loopback interface, so the bench builds `bench/janus/unloopback.c` with `cc` and
//! preloads it. Its clients: [`client`].

pub mod api;
pub mod client;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::server::Sample;

/// Where Debian's package puts Janus's plugins and transports.
const LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// How long Janus may take to listen.
const START_BOUND: Duration = Duration::from_secs(15);

/// The shim that lets Janus gather on loopback (its comment says why).
const UNLOOPBACK: &str = include_str!("../../janus/unloopback.c");

/// UDP ports past the WebSocket port where its media range starts, above our server's
/// HTTP and media ports. (The ceiling's forwarder, which runs after Janus has stopped,
/// takes ports from `base_port + 20` on, one per receiver.)
const RANGE_OFFSET: u16 = 100;

/// A running Janus.
pub struct Janus {
    child: Child,
    /// Its WebSocket, `ws://127.0.0.1:PORT/`.
    url: String,
    /// Its configuration folder, removed when it stops.
    dir: PathBuf,
}

/// How a run starts Janus.
pub struct JanusLaunch<'a> {
    pub bin: &'a Path,
    /// The WebSocket on it; media on a range from `base_port + 100`.
    pub base_port: u16,
    /// Peer connections it must hold: Janus takes a UDP port for each, where our server
    /// takes 8 for all.
    pub peer_connections: usize,
    /// Its CPUs (a taskset list); empty: unpinned.
    pub cpus: &'a str,
    /// Its `event_loops`: how many threads carry all peer connections. `None`: Janus's
    /// default, a thread of its own for each.
    pub event_loops: Option<usize>,
}

impl Janus {
    pub fn start(launch: &JanusLaunch) -> anyhow::Result<Janus> {
        let bin = launch.bin;
        if Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!(
                "no Janus at {} (Debian: apt-get install janus; or --janus-bin)",
                bin.display()
            );
        }
        let first = launch.base_port + RANGE_OFFSET;
        let last = u16::try_from(launch.peer_connections + 16)
            .ok()
            .and_then(|n| first.checked_add(n))
            .context("too many peer connections for Janus's port range")?;
        let dir = std::env::temp_dir().join(format!("bench-janus-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let prepared = write_config(&dir, launch.base_port, first, last, launch.event_loops)
            .and_then(|()| build_shim(&dir));
        let shim = match prepared {
            Ok(shim) => shim,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut cmd = if launch.cpus.is_empty() {
            Command::new(bin)
        } else {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(launch.cpus).arg(bin);
            c
        };
        cmd.arg("--configs-folder")
            .arg(&dir)
            .env("LD_PRELOAD", &shim)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e).with_context(|| format!("starting {}", bin.display()));
            }
        };
        let url = format!("ws://127.0.0.1:{}/", launch.base_port);
        let mut janus = Janus { child, url, dir };
        let deadline = Instant::now() + START_BOUND;
        let address = format!("127.0.0.1:{}", launch.base_port);
        loop {
            if let Some(status) = janus.child.try_wait()? {
                bail!("Janus exited at start: {status}{}", janus.log_tail());
            }
            if std::net::TcpStream::connect(&address).is_ok() {
                return Ok(janus);
            }
            if Instant::now() > deadline {
                bail!(
                    "Janus did not listen on {address} within {START_BOUND:?}{}",
                    janus.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of its log, for an error (its folder goes when it is dropped).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("janus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(10)..];
        if tail.is_empty() {
            String::new()
        } else {
            format!("; the end of its log:\n{}", tail.join("\n"))
        }
    }

    pub fn ws_url(&self) -> String {
        self.url.clone()
    }

    /// Its CPU time and memory now; it keeps no counters we could read.
    pub fn sample(&self) -> anyhow::Result<Sample> {
        Sample::of_process(self.child.id(), Default::default())
    }

    /// Creates rooms `ids`, each for up to `publishers`: VP8 and Opus, audio levels
    /// on, Janus's defaults otherwise.
    pub async fn create_rooms(&self, ids: &[u64], publishers: usize) -> anyhow::Result<()> {
        let mut session = api::Session::create(&self.url).await?;
        let handle = session.attach().await?;
        for &room in ids {
            let create = json!({
                "request": "create",
                "room": room,
                "permanent": false,
                "publishers": publishers,
                "videocodec": "vp8",
                "audiocodec": "opus",
            });
            session.request(handle, create, None).await?;
        }
        Ok(())
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds the loopback shim in `dir`; its path.
fn build_shim(dir: &Path) -> anyhow::Result<PathBuf> {
    let (source, shim) = (dir.join("unloopback.c"), dir.join("unloopback.so"));
    std::fs::write(&source, UNLOOPBACK)?;
    let built = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .status()
        .context("running cc to build Janus's loopback shim (Debian: apt-get install gcc)")?;
    if !built.success() {
        bail!("cc could not build {}: {built}", source.display());
    }
    Ok(shim)
}

/// Janus's configuration in `dir`: the core's, the WebSocket transport's, the VideoRoom's.
fn write_config(
    dir: &Path,
    ws_port: u16,
    first: u16,
    last: u16,
    event_loops: Option<usize>,
) -> anyhow::Result<()> {
    let loops = event_loops.map_or(String::new(), |n| format!("\n  event_loops = {n}"));
    let folders = format!(
        "configs_folder = \"{dir}\"\n  plugins_folder = \"{LIB}/plugins\"\n  transports_folder = \"{LIB}/transports\"\n  events_folder = \"{LIB}/events\"\n  loggers_folder = \"{LIB}/loggers\"",
        dir = dir.display()
    );
    let core = format!(
        r#"general: {{
  {folders}
  log_to_stdout = false
  log_to_file = "{log}"
  debug_level = 3
  debug_colors = false
  interface = "127.0.0.1"{loops}
}}
media: {{
  ipv6 = false
  rtp_port_range = "{first}-{last}"
}}
nat: {{
  ice_enforce_list = "127.0.0.1"
  ignore_mdns = true
}}
plugins: {{
  disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so"
}}
transports: {{
  disable = "libjanus_http.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so"
}}
events: {{
  broadcast = false
  disable = "libjanus_gelfevh.so,libjanus_mqttevh.so,libjanus_nanomsgevh.so,libjanus_rabbitmqevh.so,libjanus_sampleevh.so,libjanus_wsevh.so"
}}
loggers: {{
  disable = "libjanus_jsonlog.so"
}}
"#,
        log = dir.join("janus.log").display()
    );
    let websockets = format!(
        "general: {{\n  json = \"compact\"\n  ws = true\n  ws_port = {ws_port}\n  ws_ip = \"127.0.0.1\"\n  wss = false\n}}\nadmin: {{\n  admin_ws = false\n  admin_wss = false\n}}\n"
    );
    std::fs::write(dir.join("janus.jcfg"), core)?;
    std::fs::write(dir.join("janus.transport.websockets.jcfg"), websockets)?;
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")?;
    Ok(())
}
