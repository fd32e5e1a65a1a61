//! The sans-IO sync session. It consumes received frames and the time, and yields frames
//! to send and events; it owns no socket, thread, clock or file. A driver loop:
//!
//! ```text
//! loop {
//!     while let Some(n) = s.poll_transmit(&mut buf) { link.send(&buf[..n]) }
//!     match link.recv(timeout = s.poll_timeout()) {
//!         Some(frame) => s.handle_input(&frame, now),   // a typed Reject is counted, not fatal
//!         None => s.handle_timeout(now),
//!     }
//!     if s.is_closed() { break }
//! }
//! ```
//!
//! Layers, bottom up: frames (`frame.rs`: header, AEAD) → a reliable ordered channel
//! (sequence numbers, cumulative acks, go-back-N retransmission after `rto_ms`; a frame
//! seen twice is a replay and is dropped) → a stream of length-prefixed messages cut into
//! frames (`msg.rs`; small messages share a frame, large ones span several) →
//! the protocol: Hello ×2, then reconciliation turns (`recon.rs`), Want and Item messages,
//! Done ×2.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use sha2_10::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::buf::{Buf, List};
use crate::fleet::Fleet;
use crate::frame::{Cipher, Header, F_ACK, F_HANDSHAKE, HEADER, MIN_MTU, TAG};
use crate::item::{Item, Kind, MAX_ITEM};
use crate::msg::*;
use crate::recon::{
    fingerprint, lower_index, prefix, Bound, Id, Prefix, BUCKETS, FIRST_BUCKETS, LIST_MAX,
};
use crate::{Reject, Store};

mod channel;
mod items;
mod reconcile;
#[cfg(all(test, feature = "std"))]
mod tests;

/// Largest frame (and MTU) a session handles.
#[cfg(feature = "alloc")]
pub const MAX_FRAME: usize = 65535;
#[cfg(not(feature = "alloc"))]
pub const MAX_FRAME: usize = 512;
/// Largest message (reassembled from fragments).
#[cfg(feature = "alloc")]
pub const MAX_MSG: usize = 16 * 1024;
#[cfg(not(feature = "alloc"))]
pub const MAX_MSG: usize = 2048;
/// Unacknowledged frames in flight.
#[cfg(feature = "alloc")]
pub const WINDOW: usize = 16;
#[cfg(not(feature = "alloc"))]
pub const WINDOW: usize = 4;
/// Queued outgoing messages (bytes).
#[cfg(feature = "alloc")]
const OUTQ: usize = 1 << 20;
#[cfg(not(feature = "alloc"))]
const OUTQ: usize = 4096;
/// Items queued to send.
#[cfg(feature = "alloc")]
const SENDQ: usize = 1 << 22;
#[cfg(not(feature = "alloc"))]
const SENDQ: usize = 64;
/// Bytes of an item per Item message.
const CHUNK: usize = if MAX_MSG - 64 < 4096 {
    MAX_MSG - 64
} else {
    4096
};
/// Room the out-queue must have before one more incoming range is processed (the most one
/// range can produce: BUCKETS fingerprint ranges, or one id list).
const RANGE_ROOM: usize = 64 + BUCKETS * 40 + LIST_MAX * 8 + 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// Session settings.
#[derive(Clone, Copy, Debug)]
pub struct Config<'f> {
    /// Largest frame the link carries (64 ..= MAX_FRAME).
    pub mtu: usize,
    /// Item bytes this session may send (u64::MAX: no limit).
    pub byte_budget: u64,
    /// Pre-shared fleet key mode for the smallest devices (no X25519 / Hello signatures);
    /// `None`: Ed25519 identities and X25519 key agreement.
    pub psk: Option<[u8; 32]>,
    pub fleet: Fleet<'f>,
    /// Contributions for another base model are refused.
    pub base_model: [u8; 32],
    /// Retransmit unacknowledged frames after this long.
    pub rto_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The handshake finished with this authenticated peer.
    Connected { peer: [u8; 32] },
    /// A verified item was stored (new) or was already known.
    Stored { id: Id, new: bool },
    /// Something received was refused; the session goes on.
    Rejected(Reject),
    /// The byte budget stopped the sending of items.
    BudgetExhausted,
    /// Both sides are up to date; the session is closed.
    Complete,
    /// The session closed early.
    Closed(Reject),
}

/// Counters (bytes include frame headers and tags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub retransmits: u64,
    pub items_sent: u64,
    pub items_received: u64,
    pub item_bytes_sent: u64,
    /// Reconciliation messages sent and turns (a turn is one side's answer).
    pub recon_messages: u64,
    pub recon_turns: u64,
    /// Refusals by reason (`Reject as usize`).
    pub rejected: [u32; Reject::COUNT],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Handshake,
    Open,
    Closed,
}

struct Slot {
    seq: u32,
    sent: bool,
    frame: Buf<MAX_FRAME>,
}

/// Progress through a received reconciliation message (processing pauses when the
/// out-queue is full and resumes on the next poll).
#[derive(Clone, Copy, Debug)]
struct ReconIn {
    pos: usize,
    left: u8,
    lower: Bound,
    last: bool,
}

/// The output turn being built.
struct ReconOut {
    /// The ranges (postcard) of the message being built; the head is added at flush.
    msg: Buf<MAX_MSG>,
    open: bool,
    count: u8,
    from: Bound,
    skip_upto: Option<Bound>,
    nonskip: bool,
}

pub struct Session<'f, S: Store> {
    store: S,
    cfg: Config<'f>,
    role: Role,
    identity: SigningKey,
    eph: [u8; 32],
    nonce: [u8; 16],
    peer: Option<[u8; 32]>,
    peer_nonce: [u8; 16],
    state: State,
    send: Option<Cipher>,
    recv: Option<Cipher>,
    // Reliable channel.
    next_seq: u32,
    ring: List<Slot, WINDOW>,
    expected: u32,
    ack_ctr: u32,
    peer_ack_ctr: u32,
    need_ack: bool,
    last_send: u64,
    now: u64,
    // Messages: out-queue entries are [handshake u8][len u32][bytes].
    outq: Buf<OUTQ>,
    /// The message being sent: `u16` length, then its bytes.
    frag: Buf<{ MAX_MSG + 2 }>,
    frag_off: usize,
    frag_hs: bool,
    /// Received stream bytes not yet cut into messages, and the message being processed.
    inbuf: Buf<{ MAX_MSG + 2 + MAX_FRAME }>,
    msg: Buf<MAX_MSG>,
    held: Option<ReconIn>,
    // Reconciliation.
    out: ReconOut,
    /// Upper bound of the last range appended to the output turn.
    last_upper: Option<Bound>,
    recv_turn_nonskip: bool,
    recon_done: bool,
    wants: List<Want, MAX_WANTS>,
    // Items.
    sendq: List<(Id, u32), SENDQ>,
    sendq_dirty: bool,
    /// An item queued with an offset > 0 (a resume) exists: `queue_send` must dedupe.
    resumed: bool,
    partial: Buf<MAX_ITEM>,
    partial_id: Option<(Id, u32)>,
    resume_want: Option<Want>,
    done_sent: bool,
    done_recv: bool,
    budget_hit: bool,
    events: heapless::Deque<Event, 32>,
    stats: Stats,
}

fn hs_flag(b: bool) -> u8 {
    b as u8
}

impl<'f, S: Store> Session<'f, S> {
    /// A session over `store`. `identity` is this node's Ed25519 seed; `random` supplies
    /// the ephemeral X25519 secret (32 bytes) and the nonce (16): fresh per session.
    pub fn new(
        role: Role,
        cfg: Config<'f>,
        identity: &[u8; 32],
        random: &[u8; 48],
        store: S,
        now_ms: u64,
    ) -> Result<Self, Reject> {
        if cfg.mtu < MIN_MTU || cfg.mtu > MAX_FRAME {
            return Err(Reject::TooLarge);
        }
        let mut eph = [0u8; 32];
        eph.copy_from_slice(&random[..32]);
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&random[32..]);
        let mut s = Session {
            store,
            cfg,
            role,
            identity: SigningKey::from_bytes(identity),
            eph,
            nonce,
            peer: None,
            peer_nonce: [0; 16],
            state: State::Handshake,
            send: None,
            recv: None,
            next_seq: 0,
            ring: List::new(),
            expected: 0,
            ack_ctr: 0,
            peer_ack_ctr: 0,
            need_ack: false,
            last_send: now_ms,
            now: now_ms,
            outq: Buf::new(),
            frag: Buf::new(),
            frag_off: 0,
            frag_hs: false,
            inbuf: Buf::new(),
            msg: Buf::new(),
            held: None,
            out: ReconOut {
                msg: Buf::new(),
                open: false,
                count: 0,
                from: Bound::ZERO,
                skip_upto: None,
                nonskip: false,
            },
            last_upper: None,
            recv_turn_nonskip: false,
            recon_done: false,
            wants: List::new(),
            sendq: List::new(),
            sendq_dirty: false,
            resumed: false,
            partial: Buf::new(),
            partial_id: None,
            resume_want: None,
            done_sent: false,
            done_recv: false,
            budget_hit: false,
            events: heapless::Deque::new(),
            stats: Stats::default(),
        };
        if role == Role::Initiator {
            let hello = s.hello([0; 16]);
            s.push_hello(&hello)?;
        }
        Ok(s)
    }

    /// Continue an item an earlier session left half-received (see [`Session::partial`]).
    pub fn resume(&mut self, id: Id, total: u32, bytes: &[u8]) -> bool {
        if total as usize > MAX_ITEM || bytes.len() > total as usize {
            return false;
        }
        self.partial.clear();
        if !self.partial.extend(bytes) {
            return false;
        }
        self.partial_id = Some((id, total));
        self.resume_want = Some(Want {
            id: prefix(&id),
            offset: bytes.len() as u32,
        });
        true
    }

    /// A half-received item (id, total length, bytes so far), to pass to the next session.
    pub fn partial(&self) -> Option<(Id, u32, &[u8])> {
        self.partial_id
            .map(|(id, total)| (id, total, self.partial.as_slice()))
    }

    pub fn store(&self) -> &S {
        &self.store
    }
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }
    pub fn into_store(self) -> S {
        self.store
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn peer(&self) -> Option<[u8; 32]> {
        self.peer
    }
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn event(&mut self, e: Event) {
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(e);
    }

    fn reject(&mut self, r: Reject) {
        self.stats.rejected[r as usize] += 1;
        self.event(Event::Rejected(r));
    }

    fn close(&mut self, r: Reject) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.stats.rejected[r as usize] += 1;
            self.event(Event::Closed(r));
        }
    }

    // ---- handshake -------------------------------------------------------------------

    fn hello(&self, peer_nonce: [u8; 16]) -> Hello {
        let psk = self.cfg.psk.is_some();
        let mut h = Hello {
            role: (self.role == Role::Responder) as u8,
            mode: psk as u8,
            node: self.identity.verifying_key().to_bytes(),
            eph: if psk {
                [0; 32]
            } else {
                PublicKey::from(&StaticSecret::from(self.eph)).to_bytes()
            },
            nonce: self.nonce,
            sig: [0; 64],
        };
        if !psk {
            h.sig = self.identity.sign(&h.signed_digest(&peer_nonce)).to_bytes();
        }
        h
    }

    fn push_hello(&mut self, h: &Hello) -> Result<(), Reject> {
        let mut b = [0u8; 1 + HELLO_LEN];
        b[0] = T_HELLO;
        h.encode(&mut b[1..]);
        self.push_msg(&b, true)
    }

    fn on_hello(&mut self, body: &[u8]) {
        let Some(h) = Hello::decode(body) else {
            return self.close(Reject::Malformed);
        };
        let expect_role = (self.role == Role::Initiator) as u8;
        if h.role != expect_role || h.mode != self.cfg.psk.is_some() as u8 {
            return self.close(Reject::Protocol);
        }
        if !self.cfg.fleet.contains(&h.node) {
            return self.close(Reject::NotMember);
        }
        if self.store.revoked(&h.node) {
            return self.close(Reject::Revoked);
        }
        let signed_nonce = if self.role == Role::Initiator {
            self.nonce
        } else {
            [0; 16]
        };
        let mut shared = [0u8; 32];
        if self.cfg.psk.is_none() {
            let ok = VerifyingKey::from_bytes(&h.node).is_ok_and(|vk| {
                vk.verify_strict(
                    &h.signed_digest(&signed_nonce),
                    &Signature::from_bytes(&h.sig),
                )
                .is_ok()
            });
            if !ok {
                return self.close(Reject::BadSignature);
            }
            shared = StaticSecret::from(self.eph)
                .diffie_hellman(&PublicKey::from(h.eph))
                .to_bytes();
        }
        self.peer = Some(h.node);
        self.peer_nonce = h.nonce;
        if self.role == Role::Responder {
            let reply = self.hello(h.nonce);
            if self.push_hello(&reply).is_err() {
                return self.close(Reject::TooLarge);
            }
        }
        let (ni, nr) = match self.role {
            Role::Initiator => (self.nonce, h.nonce),
            Role::Responder => (h.nonce, self.nonce),
        };
        let mut salt = [0u8; 32];
        salt[..16].copy_from_slice(&ni);
        salt[16..].copy_from_slice(&nr);
        let mut ikm = [0u8; 64];
        ikm[..32].copy_from_slice(&shared);
        ikm[32..].copy_from_slice(&self.cfg.psk.unwrap_or([0; 32]));
        let hk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
        let (mut i2r, mut r2i) = ([0u8; 32], [0u8; 32]);
        let _ = hk.expand(b"cairn-sync/1 i->r", &mut i2r);
        let _ = hk.expand(b"cairn-sync/1 r->i", &mut r2i);
        let (s, r) = match self.role {
            Role::Initiator => (Cipher::new(&i2r, 0), Cipher::new(&r2i, 1)),
            Role::Responder => (Cipher::new(&r2i, 1), Cipher::new(&i2r, 0)),
        };
        self.send = Some(s);
        self.recv = Some(r);
        self.state = State::Open;
        self.event(Event::Connected { peer: h.node });
        if let Some(w) = self.resume_want.take() {
            let _ = self.wants.push(w);
            self.flush_wants();
        }
        if self.role == Role::Responder {
            // The responder opens reconciliation in the same flight as its Hello: the
            // handshake costs no extra round trip.
            self.start_recon();
        }
    }
}
