//! Whether a datagram comes from the replica: its source address must be a UDP socket of the
//! replica's current process (/proc/PID/fd against /proc/PID/net/udp*), cached per process; and
//! why a datagram was rejected.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Source addresses found not to belong to the replica are remembered this long, so a spoofer
/// sending from one socket costs one /proc lookup per period, not one per datagram. Short: the
/// replica may later get an ephemeral port a departed spoofer used.
const REJECTED_SOURCE_TTL: Duration = Duration::from_secs(1);
/// Bound on remembered rejected sources; a spoofer rotating through more sources than this per
/// TTL meets the lookup budget below instead.
const REJECTED_SOURCES_MAX: usize = 1024;
/// /proc lookups per second, at most: the cost a flood from ever new source ports can impose.
/// The replica needs one lookup per process (then its address is cached).
pub(crate) const LOOKUPS_PER_SECOND_MAX: u32 = 64;
/// Bound on the file descriptors examined in /proc/PID/fd (TigerBeetle holds a few dozen: data
/// file, io_uring, listening socket, one per peer and client connection).
const PROCESS_FDS_MAX: usize = 65_536;
/// Bound on the lines read from /proc/PID/net/udp and udp6 (one per UDP socket on the host).
const PROC_NET_UDP_LINES_MAX: usize = 65_536;

/// Why a datagram was not accepted: the `reason` label of `tb_agent_statsd_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    /// From an address that is not loopback.
    NotLoopback,
    /// No replica process is running, so there is nobody whose metrics could be accepted.
    NoReplica,
    /// The source address is not a UDP socket of the replica's current process.
    NotReplicaSocket,
    /// /proc could not tell who owns the source socket (unreadable, or the lookup budget per
    /// second was spent): rejected, since it cannot be proved to come from the replica.
    OwnerUnknown,
    /// A line lacks this replica's `cluster` or `replica` tag, or carries another value.
    WrongTags,
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        RejectReason::NotLoopback,
        RejectReason::NoReplica,
        RejectReason::NotReplicaSocket,
        RejectReason::OwnerUnknown,
        RejectReason::WrongTags,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotLoopback => "not_loopback",
            RejectReason::NoReplica => "no_replica",
            RejectReason::NotReplicaSocket => "not_replica_socket",
            RejectReason::OwnerUnknown => "owner_unknown",
            RejectReason::WrongTags => "wrong_tags",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Decides whether a source address is a UDP socket of the replica's process, caching the answer
/// per process: the accepted address until the pid changes, rejected ones briefly.
pub struct SourceCheck {
    pid: Option<u32>,
    pub(crate) accepted: Option<SocketAddr>,
    rejected: HashMap<SocketAddr, Instant>,
    budget_window: Instant,
    pub(crate) budget_used: u32,
}

impl Default for SourceCheck {
    fn default() -> Self {
        SourceCheck {
            pid: None,
            accepted: None,
            rejected: HashMap::new(),
            budget_window: Instant::now(),
            budget_used: 0,
        }
    }
}

impl SourceCheck {
    /// Ok when `from` is a UDP socket owned by process `pid`.
    pub fn check(&mut self, pid: u32, from: SocketAddr) -> Result<(), RejectReason> {
        if self.pid != Some(pid) {
            // A new replica process: nothing learnt about the previous one holds.
            self.pid = Some(pid);
            self.accepted = None;
            self.rejected.clear();
        }
        if self.accepted == Some(from) {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(until) = self.rejected.get(&from) {
            if now < *until {
                return Err(RejectReason::NotReplicaSocket);
            }
            self.rejected.remove(&from);
        }
        if now.duration_since(self.budget_window) >= Duration::from_secs(1) {
            self.budget_window = now;
            self.budget_used = 0;
        }
        if self.budget_used >= LOOKUPS_PER_SECOND_MAX {
            return Err(RejectReason::OwnerUnknown);
        }
        self.budget_used += 1;
        match socket_owned_by(pid, from) {
            Ok(true) => {
                tracing::info!(pid, %from, "statsd: accepting the replica's datagrams");
                self.accepted = Some(from);
                Ok(())
            }
            Ok(false) => {
                if self.rejected.len() >= REJECTED_SOURCES_MAX {
                    self.rejected.retain(|_, until| now < *until);
                }
                if self.rejected.len() < REJECTED_SOURCES_MAX {
                    self.rejected.insert(from, now + REJECTED_SOURCE_TTL);
                }
                Err(RejectReason::NotReplicaSocket)
            }
            Err(error) => {
                tracing::warn!(
                    pid, %from, %error,
                    "statsd: cannot tell who sent a datagram (the agent must be able to read \
                     /proc/PID/fd of the replica: run it as the replica's user or as root); rejected"
                );
                Err(RejectReason::OwnerUnknown)
            }
        }
    }
}

/// Whether `source` is the local address of a UDP socket held open by process `pid`: the socket
/// inodes bound to that address (or to the wildcard address on its port) from the process's
/// /proc/PID/net/udp and udp6, matched against the `socket:[INODE]` links in /proc/PID/fd.
pub fn socket_owned_by(pid: u32, source: SocketAddr) -> std::io::Result<bool> {
    let mut inodes = Vec::new();
    for table in ["udp", "udp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // A kernel without IPv6 has no udp6.
            Err(error) if table == "udp6" && error.kind() == std::io::ErrorKind::NotFound => {
                continue;
            }
            Err(error) => return Err(error),
        };
        for line in text.lines().skip(1).take(PROC_NET_UDP_LINES_MAX) {
            if let Some((local, inode)) = parse_proc_net_udp_line(line)
                && local.port() == source.port()
                && (local.ip() == source.ip()
                    || local.ip().is_unspecified()
                    || ipv4_mapped(local.ip()) == Some(source.ip()))
                && inode != 0
            {
                inodes.push(inode);
            }
        }
    }
    if inodes.is_empty() {
        return Ok(false);
    }
    let fd_dir = std::fs::read_dir(format!("/proc/{pid}/fd"))?;
    for entry in fd_dir.take(PROCESS_FDS_MAX) {
        let Ok(entry) = entry else { continue };
        // An fd closed between the listing and readlink is not the one we look for.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|inode| inode.parse::<u64>().ok())
            && inodes.contains(&inode)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(crate) fn ipv4_mapped(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

/// One line of /proc/net/udp or udp6: the local address and the socket inode. Addresses are
/// hex words in the kernel's byte order (`0100007F:04D2` is 127.0.0.1:1234 on little-endian).
pub(crate) fn parse_proc_net_udp_line(line: &str) -> Option<(SocketAddr, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (address, port) = fields.get(1)?.split_once(':')?;
    let inode: u64 = fields.get(9)?.parse().ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(address)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (index, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(address.get(index * 8..index * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((SocketAddr::new(ip, port), inode))
}
