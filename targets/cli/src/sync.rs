//! `cairn sync`: keys, the fleet list, a node's replica file, and the transports at the
//! edges of the sans-IO session — TCP (length-prefixed frames), UDP (one frame per
//! datagram, optionally lossy) and files (bundles).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cairn_sync::fleet::{sign_fleet, Fleet};
use cairn_sync::item::{node_id, sign_into, Kind, MAX_ITEM};
use cairn_sync::replica::{Policy, Replica};
use cairn_sync::{bundle, Config, Event, Role, Session, Store};
use clap::Subcommand;
use ed25519_dalek::SigningKey;

#[derive(Subcommand)]
pub enum SyncCmd {
    /// Make a node key (32-byte seed file); prints its public key and node id.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a fleet membership list with the authority key.
    Fleet {
        #[arg(long)]
        authority: PathBuf,
        /// Member public keys (hex), repeatable.
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        #[arg(long, default_value_t = 1)]
        version: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign this node's records from a memory store into its replica.
    Add {
        #[command(flatten)]
        node: NodeArgs,
        /// The memory store (`cairn memory`); records whose origin is this node's id.
        #[arg(long)]
        memory: PathBuf,
    },
    /// Wait for peers and sync with each (TCP or UDP).
    Serve {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        link: LinkArgs,
        /// Serve this many sessions, then exit.
        #[arg(long, default_value_t = 1)]
        sessions: usize,
    },
    /// Sync with a peer (TCP or UDP).
    Connect {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        link: LinkArgs,
    },
    /// Write a bundle: everything since a mark (default: everything), or what a peer
    /// probably lacks (everything that arrived after the last completed session with it).
    Export {
        #[command(flatten)]
        node: NodeArgs,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0, conflicts_with = "for_peer")]
        since: u64,
        /// The peer's public key (hex).
        #[arg(long = "for")]
        for_peer: Option<String>,
    },
    /// Offer this node's active adapter (from `cairn learn`) to the fleet as a contribution
    /// (n = its training records, Σ n·Δ = n × its weights), keyed by the adapter's shape.
    Contribute {
        #[command(flatten)]
        node: NodeArgs,
        #[arg(long)]
        lineage: PathBuf,
        /// The base model the adapter was trained on.
        #[arg(long)]
        model: PathBuf,
    },
    /// Import a bundle (resumable: `--from` the offset a cut import reported).
    Import {
        #[command(flatten)]
        node: NodeArgs,
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long, default_value_t = 0)]
        from: usize,
    },
}

#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// This node's key (from `keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// The signed fleet list (from `fleet`).
    #[arg(long)]
    pub fleet: PathBuf,
    /// The fleet authority's public key (hex).
    #[arg(long)]
    pub authority: String,
    /// This node's replica (a bundle file; created if missing).
    #[arg(long)]
    pub replica: PathBuf,
    /// Base model hash (hex) that adapter contributions must match (default: zeros).
    #[arg(long)]
    pub base_model: Option<String>,
}

#[derive(clap::Args, Clone, Debug)]
pub struct LinkArgs {
    /// TCP address (listen for serve, peer for connect).
    #[arg(long, conflicts_with = "udp")]
    pub tcp: Option<String>,
    /// UDP address (listen for serve, peer for connect).
    #[arg(long)]
    pub udp: Option<String>,
    #[arg(long, default_value_t = 1200)]
    pub mtu: usize,
    /// Item bytes this node may send in one session.
    #[arg(long)]
    pub budget: Option<u64>,
    /// UDP only: drop this fraction of outgoing datagrams (a jammed radio).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

fn unhex<const N: usize>(s: &str) -> Result<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N {
        bail!("expected {} hex digits, got {}", 2 * N, s.len());
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .with_context(|| format!("'{s}' is not hex"))?;
    }
    Ok(out)
}

/// The adapter key: SHA-256 of the adapter's shape (same layer, rank, classes).
fn sha2_shape(shape: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"cairn-adapter/1");
    h.update(shape);
    h.finalize().into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|v| format!("{v:02x}")).collect()
}

fn read_key(p: &Path) -> Result<SigningKey> {
    let b = std::fs::read(p).with_context(|| format!("reading key {}", p.display()))?;
    let seed: [u8; 32] = b
        .as_slice()
        .try_into()
        .map_err(|_| anyhow!("{}: a key is 32 bytes", p.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(b)
}

/// Everything a node command needs, loaded.
struct Node {
    key: SigningKey,
    fleet_bytes: Vec<u8>,
    authority: [u8; 32],
    replica: Replica,
    path: PathBuf,
    base: [u8; 32],
}

impl Node {
    fn load(a: &NodeArgs) -> Result<Node> {
        let key = read_key(&a.key)?;
        let fleet_bytes =
            std::fs::read(&a.fleet).with_context(|| format!("reading {}", a.fleet.display()))?;
        let authority = unhex::<32>(&a.authority)?;
        Fleet::verify(&fleet_bytes, &authority).map_err(|e| anyhow!("fleet list: {e:?}"))?;
        let base = a
            .base_model
            .as_deref()
            .map(unhex::<32>)
            .transpose()?
            .unwrap_or([0; 32]);
        let mut n = Node {
            key,
            fleet_bytes,
            authority,
            replica: Replica::new(Policy::default()),
            path: a.replica.clone(),
            base,
        };
        if a.replica.exists() {
            let b = std::fs::read(&a.replica)?;
            let fb = n.fleet_bytes.clone();
            let fleet = Fleet::verify(&fb, &n.authority).map_err(|e| anyhow!("{e:?}"))?;
            let rep = bundle::import(&b, 0, &mut n.replica, &fleet, &n.base)
                .map_err(|e| anyhow!("replica {}: {e:?}", a.replica.display()))?;
            if !rep.complete {
                eprintln!(
                    "warning: replica {} was cut short; {} items loaded",
                    a.replica.display(),
                    rep.stored
                );
            }
        }
        Ok(n)
    }
    fn marks_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".marks");
        PathBuf::from(p)
    }
    /// Per-peer marks: the replica's arrival counter after the last completed session.
    fn marks(&self) -> Vec<(String, u64)> {
        std::fs::read_to_string(self.marks_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (k, m) = l.split_once(' ')?;
                Some((k.to_string(), m.trim().parse().ok()?))
            })
            .collect()
    }
    fn set_mark(&self, peer: &[u8; 32], mark: u64) -> Result<()> {
        let key = hex(peer);
        let mut m: Vec<(String, u64)> = self
            .marks()
            .into_iter()
            .filter(|(k, _)| *k != key)
            .collect();
        m.push((key, mark));
        let text: String = m.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        std::fs::write(self.marks_path(), text)?;
        Ok(())
    }

    /// Write the replica atomically (a complete, signed bundle of everything).
    fn save(&self) -> Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, bundle::export(&self.replica, &self.key, 0))?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

/// A link the session runs over.
trait Link {
    fn send(&mut self, frame: &[u8]) -> Result<()>;
    fn recv(&mut self, buf: &mut [u8], wait: Duration) -> Result<Option<usize>>;
}

struct Tcp(TcpStream);
impl Link for Tcp {
    fn send(&mut self, f: &[u8]) -> Result<()> {
        self.0.write_all(&(f.len() as u16).to_le_bytes())?;
        self.0.write_all(f)?;
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8], wait: Duration) -> Result<Option<usize>> {
        self.0
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let mut len = [0u8; 2];
        match self.0.read_exact(&mut len) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        }
        let n = u16::from_le_bytes(len) as usize;
        self.0.set_read_timeout(Some(Duration::from_secs(10)))?;
        self.0.read_exact(&mut buf[..n])?;
        Ok(Some(n))
    }
}

struct Udp {
    sock: UdpSocket,
    peer: Option<std::net::SocketAddr>,
    loss: f64,
    rng: u64,
}
impl Link for Udp {
    fn send(&mut self, f: &[u8]) -> Result<()> {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if (self.rng >> 11) as f64 / (1u64 << 53) as f64 >= self.loss {
            if let Some(p) = self.peer {
                self.sock.send_to(f, p)?;
            }
        }
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8], wait: Duration) -> Result<Option<usize>> {
        self.sock
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        match self.sock.recv_from(buf) {
            Ok((n, from)) => {
                if self.peer.is_none() {
                    self.peer = Some(from);
                }
                Ok((Some(from) == self.peer).then_some(n))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Drive one session over a link until it completes, closes or times out.
fn drive<S: Store>(
    s: &mut Session<'_, S>,
    link: &mut dyn Link,
    timeout: Duration,
    mtu: usize,
) -> Result<bool> {
    let start = Instant::now();
    let mut buf = vec![0u8; mtu.max(64)];
    let mut inb = vec![0u8; 65_536];
    loop {
        let now = start.elapsed().as_millis() as u64;
        while let Some(n) = s.poll_transmit(&mut buf) {
            link.send(&buf[..n])?;
        }
        if s.is_closed() {
            // Linger briefly so the peer's last frames get their ack.
            // A peer that hangs up now is done too.
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                match link.recv(&mut inb, Duration::from_millis(50)) {
                    Ok(Some(n)) => {
                        let _ = s.handle_input(&inb[..n], start.elapsed().as_millis() as u64);
                        while let Some(n) = s.poll_transmit(&mut buf) {
                            if link.send(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            break;
        }
        if start.elapsed() > timeout {
            return Ok(false);
        }
        let wait = s
            .poll_timeout()
            .map_or(200, |t| t.saturating_sub(now).max(1));
        match link.recv(&mut inb, Duration::from_millis(wait.min(200)))? {
            Some(n) => {
                let _ = s.handle_input(&inb[..n], start.elapsed().as_millis() as u64);
            }
            None => s.handle_timeout(start.elapsed().as_millis() as u64),
        }
    }
    let mut complete = false;
    while let Some(e) = s.poll_event() {
        match e {
            Event::Complete => complete = true,
            Event::Closed(r) => eprintln!("session closed: {r:?}"),
            Event::BudgetExhausted => {
                eprintln!("byte budget reached: the rest waits for the next contact")
            }
            _ => {}
        }
    }
    Ok(complete)
}

fn session_config<'f>(fleet: Fleet<'f>, base: [u8; 32], l: &LinkArgs) -> Config<'f> {
    Config {
        mtu: l.mtu,
        byte_budget: l.budget.unwrap_or(u64::MAX),
        psk: None,
        fleet,
        base_model: base,
        rto_ms: if l.udp.is_some() { 150 } else { 2000 },
    }
}

fn report(role: &str, st: &cairn_sync::Stats, before: usize, after: usize, ok: bool) {
    let rejected: u32 = st.rejected.iter().sum();
    println!(
        "{role}: {} — items {before} -> {after} (received {}, sent {}), {} frames / {} bytes out, {} frames / {} bytes in, {} retransmissions, {rejected} refused",
        if ok { "complete" } else { "incomplete (resume at the next contact)" },
        st.items_received,
        st.items_sent,
        st.frames_sent,
        st.bytes_sent,
        st.frames_received,
        st.bytes_received,
        st.retransmits
    );
}

fn run_session(node: &mut Node, role: Role, link: &mut dyn Link, l: &LinkArgs) -> Result<bool> {
    let fleet_bytes = node.fleet_bytes.clone();
    let fleet = Fleet::verify(&fleet_bytes, &node.authority).map_err(|e| anyhow!("{e:?}"))?;
    let before = node.replica.len();
    let replica = std::mem::take(&mut node.replica);
    let mut s = Session::new(
        role,
        session_config(fleet, node.base, l),
        &node.key.to_bytes(),
        &random::<48>()?,
        replica,
        0,
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    let ok = drive(&mut s, link, Duration::from_secs(l.timeout), l.mtu)?;
    let st = *s.stats();
    let peer = s.peer();
    node.replica = s.into_store();
    if let (true, Some(p)) = (ok, peer) {
        node.set_mark(&p, node.replica.mark())?;
    }
    report(
        if role == Role::Initiator {
            "connect"
        } else {
            "serve"
        },
        &st,
        before,
        node.replica.len(),
        ok,
    );
    node.save()?;
    Ok(ok)
}

pub fn sync(cmd: SyncCmd) -> Result<()> {
    match cmd {
        SyncCmd::Keygen { out } => {
            let seed = random::<32>()?;
            std::fs::write(&out, seed)?;
            let k = SigningKey::from_bytes(&seed);
            let pk = k.verifying_key().to_bytes();
            println!("public key {}\nnode id {}", hex(&pk), node_id(&pk));
            Ok(())
        }
        SyncCmd::Fleet {
            authority,
            members,
            version,
            out,
        } => {
            let auth = read_key(&authority)?;
            let mut m: Vec<[u8; 32]> = members
                .iter()
                .map(|s| unhex::<32>(s))
                .collect::<Result<_>>()?;
            let mut buf = vec![0u8; 10 + 32 * m.len() + 64];
            let n = sign_fleet(&auth, version, &mut m, &mut buf).context("fleet list")?;
            std::fs::write(&out, &buf[..n])?;
            println!(
                "fleet of {} members, authority {}",
                m.len(),
                hex(auth.verifying_key().as_bytes())
            );
            Ok(())
        }
        SyncCmd::Add { node, memory } => {
            let mut n = Node::load(&node)?;
            let me = node_id(n.key.verifying_key().as_bytes());
            let (mut st, _) = cairn_memory::Store::open(
                cairn_memory::flash::FileFlash::<65536>::open(&memory, 0)?,
                cairn_memory::Config {
                    dim: 0,
                    max_records: usize::MAX,
                    max_payload: 4096,
                },
            )
            .map_err(|e| anyhow!("{e:?}"))?;
            let ids: Vec<_> = st.metas().iter().map(|m| (m.id, m.origin)).collect();
            let (mut added, mut other) = (0, 0);
            let mut out = vec![0u8; MAX_ITEM];
            for (id, origin) in ids {
                if origin != me {
                    other += 1;
                    continue;
                }
                let Some(body) = st.get(&id).map_err(|e| anyhow!("{e:?}"))? else {
                    continue;
                };
                let len = sign_into(&n.key, Kind::Record, &body, &mut out)
                    .map_err(|e| anyhow!("{e:?}"))?;
                let item = cairn_sync::Item::verify(&out[..len]).map_err(|e| anyhow!("{e:?}"))?;
                if n.replica.insert(&item).map_err(|e| anyhow!("{e:?}"))? {
                    added += 1;
                }
            }
            n.save()?;
            println!("signed {added} new records into {} ({other} records of other origins left out; this node's id is {me})", n.path.display());
            Ok(())
        }
        SyncCmd::Serve {
            node,
            link,
            sessions,
        } => {
            let mut n = Node::load(&node)?;
            if let Some(addr) = &link.tcp {
                let l = TcpListener::bind(addr)?;
                println!("listening on tcp {}", l.local_addr()?);
                for _ in 0..sessions {
                    let (stream, peer) = l.accept()?;
                    stream.set_nodelay(true)?;
                    println!("peer {peer}");
                    run_session(&mut n, Role::Responder, &mut Tcp(stream), &link)?;
                }
            } else if let Some(addr) = &link.udp {
                let sock = UdpSocket::bind(addr)?;
                println!("listening on udp {}", sock.local_addr()?);
                for _ in 0..sessions {
                    let mut u = Udp {
                        sock: sock.try_clone()?,
                        peer: None,
                        loss: link.loss,
                        rng: random::<8>().map(u64::from_le_bytes)? | 1,
                    };
                    run_session(&mut n, Role::Responder, &mut u, &link)?;
                }
            } else {
                bail!("serve needs --tcp ADDR or --udp ADDR");
            }
            Ok(())
        }
        SyncCmd::Connect { node, link } => {
            let mut n = Node::load(&node)?;
            let ok = if let Some(addr) = &link.tcp {
                let stream = TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                run_session(&mut n, Role::Initiator, &mut Tcp(stream), &link)?
            } else if let Some(addr) = &link.udp {
                let peer = addr.to_socket_addrs()?.next().context("no address")?;
                let sock = UdpSocket::bind(if peer.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                })?;
                let mut u = Udp {
                    sock,
                    peer: Some(peer),
                    loss: link.loss,
                    rng: random::<8>().map(u64::from_le_bytes)? | 1,
                };
                run_session(&mut n, Role::Initiator, &mut u, &link)?
            } else {
                bail!("connect needs --tcp ADDR or --udp ADDR");
            };
            if !ok {
                bail!("the session did not complete (what arrived is kept)");
            }
            Ok(())
        }
        SyncCmd::Export {
            node,
            out,
            since,
            for_peer,
        } => {
            let n = Node::load(&node)?;
            let since = match for_peer {
                Some(p) => {
                    let key = hex(&unhex::<32>(&p)?);
                    n.marks()
                        .into_iter()
                        .find(|(k, _)| *k == key)
                        .map_or(0, |m| m.1)
                }
                None => since,
            };
            let b = bundle::export(&n.replica, &n.key, since);
            std::fs::write(&out, &b)?;
            println!(
                "wrote {} ({} bytes); next mark {}",
                out.display(),
                b.len(),
                n.replica.mark()
            );
            Ok(())
        }
        SyncCmd::Contribute {
            node,
            lineage,
            model,
        } => {
            let mut n = Node::load(&node)?;
            let bytes = crate::tools::read_model(&model)?;
            let base = cairn_learn::lineage::model_hash(bytes.as_slice());
            if base != n.base {
                bail!("--base-model must be this model's hash: {}", hex(&base));
            }
            let f = cairn_memory::flash::FileFlash::<4096>::open(&lineage, 64)?;
            let (mut log, _) =
                cairn_learn::lineage::CheckpointLog::open(f).map_err(|e| anyhow!("{e:?}"))?;
            let id = log.active().context("no active adapter in the lineage")?;
            let (c, _) = log
                .find(&id)
                .map_err(|e| anyhow!("{e:?}"))?
                .context("active checkpoint missing")?;
            let mut w = vec![0f32; c.n_params as usize];
            log.load(&id, &base, &mut w).map_err(|e| anyhow!("{e:?}"))?;
            let nrec = c.n_records.max(1);
            let sum: Vec<f32> = w.iter().map(|v| v * nrec as f32).collect();
            let mut key = [0u8; 16];
            let shape: Vec<u8> = c.shape.iter().flat_map(|v| v.to_le_bytes()).collect();
            key.copy_from_slice(&sha2_shape(&shape)[..16]);
            let head = cairn_sync::item::ContributionHead {
                base,
                key,
                n: nrec,
                dim: w.len() as u32,
            };
            let mut body = vec![0u8; cairn_sync::item::CONTRIB_HEAD + 4 * w.len()];
            let len =
                cairn_sync::item::contribution_body(&head, &sum, &mut body).context("body")?;
            let mut out = vec![0u8; MAX_ITEM];
            let il = sign_into(&n.key, Kind::Contribution, &body[..len], &mut out)
                .map_err(|e| anyhow!("{e:?}"))?;
            let item = cairn_sync::Item::verify(&out[..il]).map_err(|e| anyhow!("{e:?}"))?;
            let new = n.replica.insert(&item).map_err(|e| anyhow!("{e:?}"))?;
            n.save()?;
            let (merged, total) = n.replica.merged(&key).unwrap_or_default();
            println!(
                "{} contribution of adapter {} (n = {nrec}, {} weights); the fleet's merged adapter for key {} now averages {total} records ({} weights)",
                if new { "added" } else { "already had this" },
                hex(&id[..8]),
                w.len(),
                hex(&key[..8]),
                merged.len()
            );
            Ok(())
        }
        SyncCmd::Import { node, input, from } => {
            let mut n = Node::load(&node)?;
            let b = std::fs::read(&input)?;
            let fleet_bytes = n.fleet_bytes.clone();
            let fleet = Fleet::verify(&fleet_bytes, &n.authority).map_err(|e| anyhow!("{e:?}"))?;
            let rep = bundle::import(&b, from, &mut n.replica, &fleet, &n.base)
                .map_err(|e| anyhow!("bundle: {e:?}"))?;
            n.save()?;
            let rejected: u32 = rep.rejected.iter().sum();
            println!(
                "imported {} new items ({} already known, {rejected} refused); {}",
                rep.stored,
                rep.duplicates,
                if rep.complete {
                    "bundle complete and signed".to_string()
                } else {
                    format!("bundle incomplete: resume with --from {}", rep.resume_at)
                }
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` key files in `dir` (seeds `first`, `first + 1`, …) and a fleet list signed by the
    /// first key admitting all the others.
    fn keys_and_fleet(dir: &Path, n: usize, first: u8) -> (Vec<PathBuf>, PathBuf) {
        let keys: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("k{i}"))).collect();
        for (i, k) in keys.iter().enumerate() {
            std::fs::write(k, [first + i as u8; 32]).unwrap();
        }
        let pk = |i: usize| hex(read_key(&keys[i]).unwrap().verifying_key().as_bytes());
        let fleet = dir.join("fleet");
        sync(SyncCmd::Fleet {
            authority: keys[0].clone(),
            members: (1..n).map(pk).collect(),
            version: 1,
            out: fleet.clone(),
        })
        .unwrap();
        (keys, fleet)
    }

    /// Sign a record of this node (64-d embedding filled with `v`) into its replica.
    fn add_record(n: &mut Node, ts: u64, v: i8) {
        let me = node_id(n.key.verifying_key().as_bytes());
        let emb = [v; 64];
        let r = cairn_memory::Record {
            origin: me,
            timestamp_ms: ts,
            label: 1,
            importance: 3,
            meta: [0; 4],
            scale: 0.1,
            embedding: &emb,
            payload: &[],
        };
        let mut body = vec![0u8; r.encoded_len()];
        r.encode(&mut body).unwrap();
        let mut out = vec![0u8; MAX_ITEM];
        let len = sign_into(&n.key, Kind::Record, &body, &mut out).unwrap();
        n.replica
            .insert(&cairn_sync::Item::verify(&out[..len]).unwrap())
            .unwrap();
    }

    /// Two nodes over real TCP and UDP sockets (UDP with 20% loss) converge.
    #[test]
    fn serve_and_connect_over_tcp_and_lossy_udp() {
        let dir = std::env::temp_dir().join(format!("cairn-sync-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (keys, fleet) = keys_and_fleet(&dir, 3, 1);
        let pk = |i: usize| hex(read_key(&keys[i]).unwrap().verifying_key().as_bytes());
        let node = |i: usize| NodeArgs {
            key: keys[i].clone(),
            fleet: fleet.clone(),
            authority: pk(0),
            replica: dir.join(format!("r{i}")),
            base_model: None,
        };
        // Node 1 has 30 records, node 2 has 5 of its own.
        for (i, count) in [(1usize, 30u64), (2, 5)] {
            let mut n = Node::load(&node(i)).unwrap();
            for t in 0..count {
                add_record(&mut n, t, t as i8);
            }
            n.save().unwrap();
        }
        // Lossy UDP first (node 2 lacks node 1's 30 records and vice versa), then TCP to a
        // fresh replica.
        for (tcp, port, other) in [(false, 47_312u16, "r2"), (true, 47_311, "r4")] {
            let addr = format!("127.0.0.1:{port}");
            let link = LinkArgs {
                tcp: tcp.then(|| addr.clone()),
                udp: (!tcp).then(|| addr.clone()),
                mtu: 512,
                budget: None,
                loss: if tcp { 0.0 } else { 0.2 },
                timeout: 20,
            };
            let (n1, l1) = (node(1), link.clone());
            let server = std::thread::spawn(move || {
                sync(SyncCmd::Serve {
                    node: n1,
                    link: l1,
                    sessions: 1,
                })
            });
            std::thread::sleep(Duration::from_millis(300));
            let mut n2 = node(2);
            n2.replica = dir.join(other);
            sync(SyncCmd::Connect {
                node: n2.clone(),
                link,
            })
            .unwrap();
            server.join().unwrap().unwrap();
            let a = Node::load(&node(1)).unwrap();
            let b = Node::load(&n2).unwrap();
            assert_eq!(a.replica.ids(), b.replica.ids(), "tcp {tcp}");
            assert_eq!(a.replica.len(), 35);
        }
        // What node 2 probably lacks: nothing since the last session; then one new record.
        let for2 = dir.join("for2.bundle");
        let count = |p: &Path| {
            let b = std::fs::read(p).unwrap();
            let n1 = node(1);
            let fb = std::fs::read(&n1.fleet).unwrap();
            let fl = Fleet::verify(&fb, &unhex::<32>(&n1.authority).unwrap()).unwrap();
            bundle::import(&b, 0, &mut Replica::default(), &fl, &[0; 32])
                .unwrap()
                .stored
        };
        sync(SyncCmd::Export {
            node: node(1),
            out: for2.clone(),
            since: 0,
            for_peer: Some(pk(2)),
        })
        .unwrap();
        assert_eq!(count(&for2), 0);
        {
            let mut n = Node::load(&node(1)).unwrap();
            add_record(&mut n, 999, 9);
            n.save().unwrap();
        }
        sync(SyncCmd::Export {
            node: node(1),
            out: for2.clone(),
            since: 0,
            for_peer: Some(pk(2)),
        })
        .unwrap();
        assert_eq!(count(&for2), 1);
        // A bundle to a third replica with no round trip.
        let bundle_path = dir.join("b.bundle");
        sync(SyncCmd::Export {
            node: node(1),
            out: bundle_path.clone(),
            since: 0,
            for_peer: None,
        })
        .unwrap();
        let mut n3 = node(2);
        n3.replica = dir.join("r3");
        sync(SyncCmd::Import {
            node: n3.clone(),
            input: bundle_path,
            from: 0,
        })
        .unwrap();
        assert_eq!(Node::load(&n3).unwrap().replica.len(), 36);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An adapter trained by `cairn learn` becomes a signed contribution; the replica's
    /// merged adapter for its key is that adapter (one contributor).
    #[test]
    fn contribute_the_active_adapter() {
        let dir = std::env::temp_dir().join(format!("cairn-contrib-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/zoo");
        let (model, lineage) = crate::learn::tests::trained_lineage(&zoo, &dir);
        let bytes = crate::tools::read_model(&model).unwrap();
        let base = cairn_learn::lineage::model_hash(bytes.as_slice());
        let (keys, fleet) = keys_and_fleet(&dir, 2, 11);
        let pk = |i: usize| hex(read_key(&keys[i]).unwrap().verifying_key().as_bytes());
        let node = NodeArgs {
            key: keys[1].clone(),
            fleet,
            authority: pk(0),
            replica: dir.join("r"),
            base_model: Some(hex(&base)),
        };
        sync(SyncCmd::Contribute {
            node: node.clone(),
            lineage: lineage.clone(),
            model: model.clone(),
        })
        .unwrap();
        let n = Node::load(&node).unwrap();
        assert_eq!(n.replica.len(), 1);
        // Another base model is refused.
        let wrong = NodeArgs {
            base_model: Some(hex(&[1u8; 32])),
            ..node
        };
        assert!(sync(SyncCmd::Contribute {
            node: wrong,
            lineage,
            model
        })
        .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
