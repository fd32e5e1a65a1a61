//! `cairn sync`: keys, the fleet list, a node's replica file, and the transports at the
//! edges of the sans-IO session — TCP (length-prefixed frames), UDP (one frame per
//! datagram, optionally lossy) and files (bundles). The node itself (signing, applying
//! arrivals to memory, contributions and merges through the gate) is `cairn_node::Node`;
//! this file adds only its files and sockets.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cairn_core::emit::AlignedBytes;
use cairn_core::Model;
use cairn_kernels::CpuBackend;
use cairn_learn::lineage::{model_hash, CheckpointLog};
use cairn_memory::flash::{FileFlash, RamFlash};
use cairn_memory::ram::HeapRam;
use cairn_node::adapter::{Adapter, Outcome};
use cairn_node::{Identity, Node, Parts, SessionSettings};
use cairn_sync::fleet::sign_fleet;
#[cfg(test)]
use cairn_sync::fleet::Fleet;
use cairn_sync::item::node_id;
use cairn_sync::item::{sign_into, statement_body, Action, Kind, Statement, MAX_ITEM};
use cairn_sync::replica::{Policy, Replica};
use cairn_sync::{bundle, Event, Role, Session, Store};
use clap::Subcommand;
use ed25519_dalek::SigningKey;
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};

use crate::learn::HyperArgs;

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
    /// Sign this node's records of its memory store (`--memory`: records whose origin is
    /// this node's id) into its replica.
    Add {
        #[command(flatten)]
        node: NodeArgs,
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
    /// (n = its training records, Σ n·Δ = n × (active − base adapter)), keyed by the
    /// adapter's shape. The adapter flags must be those `cairn learn train` used.
    Contribute {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        adapter: AdapterArgs,
    },
    /// Judge the fleet's merged adapter (every contribution in the replica for this
    /// adapter) on the held-out records of `--memory`: promoted through the gate into the
    /// lineage, or rejected (recorded there too).
    Apply {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        adapter: AdapterArgs,
        /// Labels at or above this are the new classes (for the gate).
        #[arg(long)]
        new_from: u16,
    },
    /// As the fleet authority: revoke a compromised member's key (its sessions, bundles
    /// and new items are refused, and the records it wrote leave every node that takes
    /// the statement), or name a key that may delete any record (`--deleter`). The signed
    /// statement goes into this node's replica and travels from it by sync and bundles.
    Revoke {
        #[command(flatten)]
        node: NodeArgs,
        /// The authority's key file (the one that signed the fleet list).
        #[arg(long)]
        authority_key: PathBuf,
        /// The member public key (hex) the statement is about.
        #[arg(long)]
        subject: String,
        /// Designate `--subject` as a deleter instead of revoking it.
        #[arg(long)]
        deleter: bool,
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
    /// This node's memory store (`cairn memory`): its own records are signed from it, and
    /// records arriving by sync are added to it (without it they stay in the replica).
    #[arg(long)]
    pub memory: Option<PathBuf>,
}

/// The adapter a node learns (the flags of `cairn learn train`).
#[derive(clap::Args, Clone, Debug)]
pub struct AdapterArgs {
    #[arg(long)]
    pub lineage: PathBuf,
    /// The base model the adapter was trained on.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub lora_op: Option<usize>,
    #[arg(long)]
    pub head_op: Option<usize>,
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    #[command(flatten)]
    pub hp: HyperArgs,
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

/// The memory store a node applies arrivals to: a store file, or RAM (discarded at exit).
pub enum MemoryFlash {
    File(FileFlash<65536>),
    Ram(RamFlash<65536>),
}

impl ErrorType for MemoryFlash {
    type Error = cairn_memory::flash::FlashError;
}

impl ReadNorFlash for MemoryFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        match self {
            MemoryFlash::File(f) => f.read(offset, bytes),
            MemoryFlash::Ram(f) => f.read(offset, bytes),
        }
    }
    fn capacity(&self) -> usize {
        match self {
            MemoryFlash::File(f) => f.capacity(),
            MemoryFlash::Ram(f) => f.capacity(),
        }
    }
}

impl NorFlash for MemoryFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 65536;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        match self {
            MemoryFlash::File(f) => f.erase(from, to),
            MemoryFlash::Ram(f) => f.erase(from, to),
        }
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        match self {
            MemoryFlash::File(f) => f.write(offset, bytes),
            MemoryFlash::Ram(f) => f.write(offset, bytes),
        }
    }
}

/// The parts of a node on the command line.
pub struct Cli;
impl Parts for Cli {
    type Backend = CpuBackend;
    type MemoryFlash = MemoryFlash;
    type MemoryRam = HeapRam;
    type LineageFlash = FileFlash<4096>;
    type Items = Replica;
}

/// The memory store of `--memory` (created with 64 sectors if missing), or one in RAM.
fn open_memory(path: Option<&Path>) -> Result<cairn_memory::Store<MemoryFlash>> {
    let flash = match path {
        Some(p) => {
            crate::memory::refuse_foreign_file(p)?;
            MemoryFlash::File(
                FileFlash::open(p, 64).with_context(|| format!("opening {}", p.display()))?,
            )
        }
        None => MemoryFlash::Ram(RamFlash::new(16)),
    };
    let cfg = cairn_memory::Config {
        dim: 0,
        max_records: usize::MAX,
        max_payload: 4096,
    };
    let (store, _) = cairn_memory::Store::open(flash, cfg).map_err(|e| anyhow!("memory: {e:?}"))?;
    Ok(store)
}

/// The learning part of a node: the model, its lineage, the adapter's spec.
struct LearnFiles {
    bytes: AlignedBytes,
    lineage: PathBuf,
    spec: cairn_node::LearnSpec,
    fin: usize,
}

impl LearnFiles {
    fn load(a: &AdapterArgs, new_from: u16) -> Result<LearnFiles> {
        let bytes = crate::tools::read_model(&a.model)?;
        let m = Model::parse(bytes.as_slice()).map_err(|e| anyhow!("{e:?}"))?;
        let (spec, fin) =
            crate::learn::learn_spec(&m, a.lora_op, a.head_op, a.classes, new_from, &a.hp)?;
        Ok(LearnFiles {
            bytes,
            lineage: a.lineage.clone(),
            spec,
            fin,
        })
    }
}

/// Everything a node command needs, loaded.
struct NodeFiles {
    key: SigningKey,
    fleet_bytes: Vec<u8>,
    authority: [u8; 32],
    replica: Replica,
    path: PathBuf,
    base: [u8; 32],
    memory: Option<PathBuf>,
}

impl NodeFiles {
    fn load(a: &NodeArgs) -> Result<NodeFiles> {
        let key = read_key(&a.key)?;
        let fleet_bytes =
            std::fs::read(&a.fleet).with_context(|| format!("reading {}", a.fleet.display()))?;
        let authority = unhex::<32>(&a.authority)?;
        let identity = Identity::new(&key.to_bytes(), &fleet_bytes, &authority)
            .map_err(|e| anyhow!("fleet list: {e:?}"))?;
        let base = a
            .base_model
            .as_deref()
            .map(unhex::<32>)
            .transpose()?
            .unwrap_or([0; 32]);
        let mut replica = Replica::new(Policy::default());
        if a.replica.exists() {
            let b = std::fs::read(&a.replica)?;
            let rep = bundle::import(&b, 0, &mut replica, &identity.fleet(), &base)
                .map_err(|e| anyhow!("replica {}: {e:?}", a.replica.display()))?;
            if !rep.complete {
                eprintln!(
                    "warning: replica {} was cut short; {} items loaded",
                    a.replica.display(),
                    rep.stored
                );
            }
        }
        Ok(NodeFiles {
            key,
            fleet_bytes,
            authority,
            replica,
            path: a.replica.clone(),
            base,
            memory: a.memory.clone(),
        })
    }

    /// Assemble the node (identity, memory store, replica, and learning when given), run
    /// `f` on it, and take the replica back.
    fn with_node<T>(
        &mut self,
        learn: Option<&LearnFiles>,
        f: impl FnOnce(&mut Node<'_, Cli>) -> Result<T>,
    ) -> Result<T> {
        let identity = Identity::new(&self.key.to_bytes(), &self.fleet_bytes, &self.authority)
            .map_err(|e| anyhow!("fleet list: {e:?}"))?;
        let memory = open_memory(self.memory.as_deref())?;
        let mut arena = Vec::new();
        let mut adapter = None;
        let model;
        if let Some(l) = learn {
            model = Model::parse(l.bytes.as_slice()).map_err(|e| anyhow!("{e:?}"))?;
            let base = model_hash(l.bytes.as_slice());
            if base != self.base {
                bail!("--base-model must be this model's hash: {}", hex(&base));
            }
            let f = FileFlash::<4096>::open(&l.lineage, 64)
                .with_context(|| format!("opening {}", l.lineage.display()))?;
            let mut log = CheckpointLog::open(f).map_err(|e| anyhow!("{e:?}"))?.0;
            let need = cairn_node::adapter::arena_bytes(&l.spec, Some(&model), l.fin)
                .map_err(|e| anyhow!("{e:?}"))?;
            arena = vec![0u32; need.div_ceil(4)];
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut arena);
            let a = Adapter::open(l.spec, Some(&model), base, l.fin, bytes, &mut log)
                .map_err(|e| anyhow!("adapter: {e:?}"))?;
            adapter = Some((a, log));
        }
        let items = std::mem::take(&mut self.replica);
        let mut node = Node::<Cli>::new(identity, memory, items).with_base_model(self.base);
        if let Some((a, log)) = adapter {
            node = node.with_learning(a, log);
        }
        let out = f(&mut node);
        let (_, _, items) = node.into_parts();
        self.replica = items;
        drop(arena);
        out
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

fn run_session(
    files: &mut NodeFiles,
    role: Role,
    link: &mut dyn Link,
    l: &LinkArgs,
) -> Result<bool> {
    let before = files.replica.len();
    let random = random::<48>()?;
    let settings = SessionSettings {
        mtu: l.mtu,
        byte_budget: l.budget.unwrap_or(u64::MAX),
        rto_ms: if l.udp.is_some() { 150 } else { 2000 },
    };
    let (ok, st, peer, applied) = files.with_node(None, |node| {
        let mut s = node
            .session(role, settings, &random, 0)
            .map_err(|e| anyhow!("{e:?}"))?;
        let ok = drive(&mut s, link, Duration::from_secs(l.timeout), l.mtu)?;
        let (st, peer) = (*s.stats(), s.peer());
        drop(s);
        Ok((ok, st, peer, node.report().records))
    })?;
    if let (true, Some(p)) = (ok, peer) {
        files.set_mark(&p, files.replica.mark())?;
    }
    report(
        if role == Role::Initiator {
            "connect"
        } else {
            "serve"
        },
        &st,
        before,
        files.replica.len(),
        ok,
    );
    if applied > 0 {
        println!("{applied} arriving records added to the memory store");
    }
    files.save()?;
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
        SyncCmd::Add { node } => {
            if node.memory.as_deref().is_none_or(|p| !p.exists()) {
                bail!("add signs the records of a memory store: pass --memory STORE (an existing one)");
            }
            let mut n = NodeFiles::load(&node)?;
            let (added, other, me) = n.with_node(None, |nd| {
                let me = nd.identity().node_id();
                let other = nd
                    .memory()
                    .metas()
                    .iter()
                    .filter(|m| m.origin != me)
                    .count();
                let added = nd.publish().map_err(|e| anyhow!("{e:?}"))?;
                Ok((added, other, me))
            })?;
            n.save()?;
            println!("signed {added} new records into {} ({other} records of other origins left out; this node's id is {me})", n.path.display());
            Ok(())
        }
        SyncCmd::Serve {
            node,
            link,
            sessions,
        } => {
            let mut n = NodeFiles::load(&node)?;
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
            let mut n = NodeFiles::load(&node)?;
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
            let mut n = NodeFiles::load(&node)?;
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
            let mut b = Vec::new();
            n.with_node(None, |nd| {
                nd.export_bundle(since, &mut |x| {
                    b.extend_from_slice(x);
                    true
                })
                .map_err(|e| anyhow!("{e:?}"))
            })?;
            n.save()?;
            std::fs::write(&out, &b)?;
            println!(
                "wrote {} ({} bytes); next mark {}",
                out.display(),
                b.len(),
                n.replica.mark()
            );
            Ok(())
        }
        SyncCmd::Contribute { node, adapter } => {
            let mut n = NodeFiles::load(&node)?;
            let learn = LearnFiles::load(&adapter, adapter.classes as u16)?;
            let (id, weights) = n.with_node(Some(&learn), |nd| {
                let mut buf =
                    vec![0u8; nd.contribution_buffer_len().map_err(|e| anyhow!("{e:?}"))?];
                let id = nd.contribute_into(&mut buf).map_err(|e| anyhow!("{e:?}"))?;
                let a = nd.adapter().context("learning")?;
                Ok((id.map(|i| (i, a.active_id())), a.active_params().len()))
            })?;
            let (item, active) = id.context("no active adapter in the lineage")?;
            n.save()?;
            println!(
                "contribution {} of adapter {} ({weights} weights) is in {}",
                hex(&item[..8]),
                hex(&active[..8]),
                n.path.display()
            );
            Ok(())
        }
        SyncCmd::Apply {
            node,
            adapter,
            new_from,
        } => {
            if node.memory.is_none() {
                bail!("the gate judges a merge on held-out memory: pass --memory STORE");
            }
            let mut n = NodeFiles::load(&node)?;
            let learn = LearnFiles::load(&adapter, new_from)?;
            let outcome =
                n.with_node(Some(&learn), |nd| nd.apply().map_err(|e| anyhow!("{e:?}")))?;
            match outcome {
                None => println!("no new set of contributions to judge"),
                Some(Outcome::Promoted { id, before, after }) => println!(
                    "merged adapter promoted: checkpoint {} (held-out old {:.1}% -> {:.1}%, new {:.1}% -> {:.1}%)",
                    hex(&id[..8]),
                    100.0 * before.old_acc,
                    100.0 * after.old_acc,
                    100.0 * before.new_acc,
                    100.0 * after.new_acc
                ),
                Some(Outcome::Rejected { reason, .. }) => {
                    println!("merged adapter rejected ({reason:?}): the active adapter is unchanged")
                }
            }
            Ok(())
        }
        SyncCmd::Revoke {
            node,
            authority_key,
            subject,
            deleter,
        } => {
            let auth = read_key(&authority_key)?;
            let mut n = NodeFiles::load(&node)?;
            if auth.verifying_key().to_bytes() != n.authority {
                bail!(
                    "{} is not the fleet authority's key (the authority is {})",
                    authority_key.display(),
                    hex(&n.authority)
                );
            }
            let statement = Statement {
                action: if deleter {
                    Action::Deleter
                } else {
                    Action::Revoke
                },
                subject: unhex::<32>(&subject).context("--subject")?,
                // Statements are ordered by this clock; wall time in ms is what a
                // person at a console has.
                hlc: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            };
            let mut out = vec![0u8; MAX_ITEM];
            let len = sign_into(
                &auth,
                Kind::Authority,
                &statement_body(&statement),
                &mut out,
            )
            .map_err(|e| anyhow!("statement: {e:?}"))?;
            let (new, dropped) = n.with_node(None, |nd| {
                let before = nd.report().deleted;
                let new = nd
                    .accept(&out[..len])
                    .map_err(|e| anyhow!("statement: {e:?}"))?;
                Ok((new, nd.report().deleted - before))
            })?;
            n.save()?;
            let what = if deleter { "deleter" } else { "revoked" };
            println!(
                "{what}: {} ({}; {dropped} of its records left memory); export or sync to spread it",
                subject.trim(),
                if new { "statement added" } else { "already held" }
            );
            Ok(())
        }
        SyncCmd::Import { node, input, from } => {
            let mut n = NodeFiles::load(&node)?;
            let b = std::fs::read(&input)?;
            let (rep, applied) = n.with_node(None, |nd| {
                let rep = nd
                    .import_bundle(&b, from)
                    .map_err(|e| anyhow!("bundle: {e:?}"))?;
                Ok((rep, nd.report().records))
            })?;
            n.save()?;
            let rejected: u32 = rep.rejected.iter().sum();
            println!(
                "imported {} new items ({} already known, {rejected} refused; {applied} records added to memory); {}",
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
    fn add_record(n: &mut NodeFiles, ts: u64, v: i8) {
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

    /// `sync add --memory` mistyped to a file of three sectors or more that is not a store:
    /// refused, and not a byte of it changes (opening a store erases sectors it does not
    /// recognise).
    #[test]
    fn add_refuses_a_memory_file_that_is_not_a_store() {
        let dir = std::env::temp_dir().join(format!("cairn-sync-guard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (keys, fleet) = keys_and_fleet(&dir, 2, 1);
        let not_a_store = dir.join("photos.tar");
        let bytes: Vec<u8> = (0..3 * 65536u32).map(|i| (i * 7 + 1) as u8).collect();
        std::fs::write(&not_a_store, &bytes).unwrap();
        let node = NodeArgs {
            key: keys[1].clone(),
            fleet,
            authority: hex(read_key(&keys[0]).unwrap().verifying_key().as_bytes()),
            replica: dir.join("r1"),
            base_model: None,
            memory: Some(not_a_store.clone()),
        };
        let err = sync(SyncCmd::Add { node }).unwrap_err();
        assert!(
            format!("{err}").contains("not a cairn memory store"),
            "{err}"
        );
        assert!(
            std::fs::read(&not_a_store).unwrap() == bytes,
            "the file was written"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `sync revoke`: only with the authority's key; the revoked member's items leave the
    /// replica, and its bundles are refused from then on.
    #[test]
    fn revoke_drops_a_members_items_and_refuses_its_bundles() {
        let dir = std::env::temp_dir().join(format!("cairn-revoke-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (keys, fleet) = keys_and_fleet(&dir, 3, 40);
        let pk = |i: usize| hex(read_key(&keys[i]).unwrap().verifying_key().as_bytes());
        let node = |i: usize| NodeArgs {
            key: keys[i].clone(),
            fleet: fleet.clone(),
            authority: pk(0),
            replica: dir.join(format!("r{i}")),
            base_model: None,
            memory: None,
        };
        let mut n1 = NodeFiles::load(&node(1)).unwrap();
        for t in 0..5 {
            add_record(&mut n1, t, t as i8);
        }
        n1.save().unwrap();
        let bundle = dir.join("b1");
        sync(SyncCmd::Export {
            node: node(1),
            out: bundle.clone(),
            since: 0,
            for_peer: None,
        })
        .unwrap();
        let import = || {
            sync(SyncCmd::Import {
                node: node(2),
                input: bundle.clone(),
                from: 0,
            })
        };
        import().unwrap();
        assert_eq!(NodeFiles::load(&node(2)).unwrap().replica.len(), 5);
        let revoke = |authority_key: &PathBuf| {
            sync(SyncCmd::Revoke {
                node: node(2),
                authority_key: authority_key.clone(),
                subject: pk(1),
                deleter: false,
            })
        };
        let e = revoke(&keys[2]).unwrap_err();
        assert!(
            format!("{e:#}").contains("not the fleet authority's key"),
            "{e:#}"
        );
        assert_eq!(NodeFiles::load(&node(2)).unwrap().replica.len(), 5);
        revoke(&keys[0]).unwrap();
        let n2 = NodeFiles::load(&node(2)).unwrap();
        let k1 = read_key(&keys[1]).unwrap().verifying_key().to_bytes();
        assert!(n2.replica.revoked(&k1));
        // Only the statement is left.
        assert_eq!(n2.replica.len(), 1);
        let e = import().unwrap_err();
        assert!(format!("{e:#}").contains("Revoked"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
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
            memory: None,
        };
        // Node 1 has 30 records, node 2 has 5 of its own.
        for (i, count) in [(1usize, 30u64), (2, 5)] {
            let mut n = NodeFiles::load(&node(i)).unwrap();
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
            let a = NodeFiles::load(&node(1)).unwrap();
            let b = NodeFiles::load(&n2).unwrap();
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
            let mut n = NodeFiles::load(&node(1)).unwrap();
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
        assert_eq!(NodeFiles::load(&n3).unwrap().replica.len(), 36);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An adapter trained by `cairn learn` becomes a signed contribution; a second node that
    /// imports it judges the merge through the gate on its memory and writes the verdict to
    /// its lineage; another base model is refused.
    #[test]
    fn contribute_the_active_adapter_and_apply_the_merge() {
        let dir = std::env::temp_dir().join(format!("cairn-contrib-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/zoo");
        let (model, lineage) = crate::learn::tests::trained_lineage(&zoo, &dir);
        let bytes = crate::tools::read_model(&model).unwrap();
        let base = cairn_learn::lineage::model_hash(bytes.as_slice());
        let (keys, fleet) = keys_and_fleet(&dir, 3, 11);
        let pk = |i: usize| hex(read_key(&keys[i]).unwrap().verifying_key().as_bytes());
        let node = NodeArgs {
            key: keys[1].clone(),
            fleet,
            authority: pk(0),
            replica: dir.join("r"),
            base_model: Some(hex(&base)),
            memory: None,
        };
        // The flags `trained_lineage` trained with.
        let adapter = AdapterArgs {
            lineage: lineage.clone(),
            model: model.clone(),
            lora_op: None,
            head_op: None,
            classes: 10,
            hp: HyperArgs::default(),
        };
        sync(SyncCmd::Contribute {
            node: node.clone(),
            adapter: adapter.clone(),
        })
        .unwrap();
        let n = NodeFiles::load(&node).unwrap();
        assert_eq!(n.replica.len(), 1);
        // A second node imports it and judges the merge on its memory (the same store).
        let bundle = dir.join("c.bundle");
        sync(SyncCmd::Export {
            node: node.clone(),
            out: bundle.clone(),
            since: 0,
            for_peer: None,
        })
        .unwrap();
        let other = NodeArgs {
            key: keys[2].clone(),
            replica: dir.join("r2"),
            memory: Some(dir.join("mem.store")),
            ..node.clone()
        };
        sync(SyncCmd::Import {
            node: other.clone(),
            input: bundle,
            from: 0,
        })
        .unwrap();
        let lineage2 = dir.join("lineage2.log");
        let entries = |p: &Path| {
            let mut n = 0;
            crate::learn::open_lineage_for_test(p)
                .for_each(|_| n += 1)
                .unwrap();
            n
        };
        sync(SyncCmd::Apply {
            node: other,
            adapter: AdapterArgs {
                lineage: lineage2.clone(),
                ..adapter.clone()
            },
            new_from: 5,
        })
        .unwrap();
        assert!(entries(&lineage2) >= 1, "the verdict is in the lineage");
        // Another base model is refused.
        let wrong = NodeArgs {
            base_model: Some(hex(&[1u8; 32])),
            ..node
        };
        assert!(sync(SyncCmd::Contribute {
            node: wrong,
            adapter
        })
        .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
