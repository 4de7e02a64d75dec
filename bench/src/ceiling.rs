//! The raw ceiling: a UDP forwarder with no WebRTC and no crypto, which receives each packet
//! once and sends it to N receivers with batched syscalls (recvmmsg, sendmmsg). It runs as
//! a process of its own (`bench forward`, pinned where the server runs) under the same
//! load shape as a scenario, so the server's egress can be read as a fraction of it.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg};

/// Datagrams per recvmmsg, destinations per sendmmsg.
const BATCH: usize = 64;
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// The forwarder: receives on `listen`, sends each datagram to 127.0.0.1 ports
/// `first_port .. first_port + fanout`, `send_batch` destinations per sendmmsg, for
/// `seconds`; prints `received N sent M`.
pub fn forward(
    listen: &str,
    first_port: u16,
    fanout: u16,
    send_batch: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let send_batch = send_batch.clamp(1, BATCH);
    let socket = UdpSocket::bind(listen).with_context(|| format!("bind {listen}"))?;
    let s = socket2::SockRef::from(&socket);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let fd = socket.as_raw_fd();
    let dests: Vec<Option<SockaddrIn>> = (0..fanout)
        .map(|i| {
            Some(SockaddrIn::from(SocketAddrV4::new(
                [127, 0, 0, 1].into(),
                first_port + i,
            )))
        })
        .collect();
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut recv_headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let (mut received, mut sent) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut lens = Vec::with_capacity(BATCH);
    while Instant::now() < deadline {
        lens.clear();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            match recvmmsg(
                fd,
                &mut recv_headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(results) => lens.extend(results.map(|r| r.bytes)),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(e) => bail!("recvmmsg: {e}"),
            }
        }
        received += lens.len() as u64;
        for (buf, len) in bufs.iter().zip(&lens) {
            // The same bytes to every destination: one iovec list per packet, not per call.
            let iov: Vec<[IoSlice<'_>; 1]> = vec![[IoSlice::new(&buf[..*len])]; send_batch];
            for chunk in dests.chunks(send_batch) {
                let iov = &iov[..chunk.len()];
                let mut offset = 0;
                while offset < chunk.len() {
                    match sendmmsg(
                        fd,
                        &mut send_headers,
                        iov[offset..].iter(),
                        &chunk[offset..],
                        [],
                        MsgFlags::empty(),
                    ) {
                        Ok(results) => {
                            let n = results.count();
                            sent += n as u64;
                            offset += n.max(1);
                        }
                        // A full send buffer: that datagram is lost, like a server's drop.
                        Err(_) => offset += 1,
                    }
                }
            }
        }
    }
    println!("received {received} sent {sent}");
    Ok(())
}

/// What the ceiling did under one load.
#[derive(Debug, Clone)]
pub struct Ceiling {
    pub fanout: usize,
    pub offered_pps: f64,
    pub egress_pps: f64,
    pub cores: f64,
    pub loss_pct: f64,
}

impl Ceiling {
    pub fn pps_per_core(&self) -> f64 {
        if self.cores > 0.0 {
            self.egress_pps / self.cores
        } else {
            0.0
        }
    }
}

/// Runs the forwarder (this binary's `forward`, pinned to `cpus`) for `seconds` with a
/// source sending `pps` packets of `size` bytes, and `fanout` receivers here.
pub fn run(
    fanout: usize,
    pps: f64,
    size: usize,
    seconds: u64,
    base_port: u16,
    cpus: &str,
    send_batch: usize,
) -> anyhow::Result<Ceiling> {
    let fanout = fanout.clamp(1, 60_000);
    let listen = format!("127.0.0.1:{base_port}");
    let first = base_port + 1;
    let receivers: Vec<UdpSocket> = (0..fanout)
        .map(|i| UdpSocket::bind(("127.0.0.1", first + i as u16)))
        .collect::<Result<_, _>>()
        .context("binding the receivers")?;
    // The receivers are never read: egress is what the forwarder sent, as the server's
    // own `sfu_udp_tx_packets_total` counts it; they only exist so that no ICMP
    // unreachable comes back.
    let exe = std::env::current_exe()?;
    let mut cmd = if cpus.is_empty() {
        Command::new(&exe)
    } else {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(cpus).arg(&exe);
        c
    };
    let run_for = seconds + 2;
    let child = cmd
        .args(["forward", "--listen", &listen, "--first-port"])
        .arg(first.to_string())
        .args([
            "--fanout",
            &fanout.to_string(),
            "--seconds",
            &run_for.to_string(),
            "--send-batch",
            &send_batch.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the forwarder")?;
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(300));

    let source = UdpSocket::bind("127.0.0.1:0")?;
    let payload = vec![0x5au8; size];
    let start = Instant::now();
    let cpu0 = cpu_seconds(pid);
    let mut sent = 0u64;
    let end = start + Duration::from_secs(seconds);
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * pps) as u64;
        while sent < due {
            let _ = source.send_to(&payload, &listen);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let window = start.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(pid);
    let out = child.wait_with_output()?;
    drop(receivers);
    if !out.status.success() {
        bail!("the forwarder failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let delivered = text
        .split_whitespace()
        .skip_while(|w| *w != "sent")
        .nth(1)
        .and_then(|v| v.parse::<f64>().ok())
        .context("the forwarder's count")?;
    let expected = sent as f64 * fanout as f64;
    Ok(Ceiling {
        fanout,
        offered_pps: pps,
        egress_pps: delivered / window,
        cores: (cpu1 - cpu0) / window,
        loss_pct: if expected > 0.0 {
            100.0 * (1.0 - delivered / expected).max(0.0)
        } else {
            0.0
        },
    })
}

fn cpu_seconds(pid: u32) -> f64 {
    let path = format!("/proc/{pid}/stat");
    let Ok(stat) = std::fs::read_to_string(Path::new(&path)) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}
