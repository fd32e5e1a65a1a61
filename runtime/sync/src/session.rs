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

    // ---- out-queue and fragmentation --------------------------------------------------

    fn push_msg(&mut self, m: &[u8], handshake: bool) -> Result<(), Reject> {
        if m.len() > MAX_MSG || self.outq.free() < 5 + m.len() {
            return Err(Reject::TooLarge);
        }
        self.outq.extend(&[hs_flag(handshake)]);
        self.outq.extend(&(m.len() as u32).to_le_bytes());
        self.outq.extend(m);
        Ok(())
    }

    /// Load the next message to fragment, if any: queued messages first, then item chunks,
    /// then Done.
    fn next_message(&mut self) -> bool {
        if self.frag_off < self.frag.len() {
            return true;
        }
        self.frag.clear();
        self.frag_off = 0;
        if self.outq.len() >= 5 {
            let q = self.outq.as_slice();
            let hs = q[0] != 0;
            let len = u32::from_le_bytes([q[1], q[2], q[3], q[4]]) as usize;
            self.frag.extend(&(len as u16).to_le_bytes());
            self.frag.extend(&q[5..5 + len]);
            self.outq.consume(5 + len);
            self.frag_hs = hs;
            return true;
        }
        if self.state != State::Open {
            return false;
        }
        if self.held.is_some() {
            self.resume_held();
            self.drain_inbuf();
            if !self.outq.is_empty() {
                return self.next_message();
            }
        }
        if self.item_chunk() {
            return true;
        }
        if self.recon_done
            && self.sendq.is_empty()
            && self.wants.is_empty()
            && self.held.is_none()
            && !self.done_sent
        {
            self.done_sent = true;
            self.frag.extend(&[1, 0, T_DONE]);
            self.frag_hs = false;
            return true;
        }
        false
    }

    /// The next frame to send into `out` (at least the MTU long); its length.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        if out.len() < self.cfg.mtu {
            return None;
        }
        if self.state == State::Closed {
            // Lingering after completion: acknowledge what the peer still retransmits.
            return if self.need_ack {
                self.ack_frame(out)
            } else {
                None
            };
        }
        // Retransmissions first.
        if let Some(i) = self.ring.as_slice().iter().position(|s| !s.sent) {
            let slot = &mut self.ring.as_mut_slice()[i];
            slot.sent = true;
            let n = slot.frame.len();
            out[..n].copy_from_slice(slot.frame.as_slice());
            return Some(self.sent(n));
        }
        if self.ring.len() < WINDOW && self.next_message() {
            let hs = self.frag_hs;
            if !hs && self.send.is_none() {
                return None;
            }
            // Fill the frame from the message stream; a frame never mixes plaintext
            // handshake bytes with encrypted ones.
            let room = self.cfg.mtu - HEADER - if hs { 0 } else { TAG };
            let mut n = 0;
            while n < room && self.next_message() && self.frag_hs == hs {
                let rest = self.frag.len() - self.frag_off;
                let k = rest.min(room - n);
                out[HEADER + n..HEADER + n + k]
                    .copy_from_slice(&self.frag.as_slice()[self.frag_off..self.frag_off + k]);
                self.frag_off += k;
                n += k;
            }
            let h = Header {
                flags: if hs { F_HANDSHAKE } else { 0 },
                seq: self.next_seq,
                ack: self.expected,
                len: n as u16,
            };
            h.write(&mut out[..HEADER]);
            let total = HEADER + n + if hs { 0 } else { TAG };
            if !hs {
                let c = self.send.as_ref()?;
                if c.seal(&mut out[..total]).is_err() {
                    return None;
                }
            }
            self.next_seq = self.next_seq.wrapping_add(1);
            let mut frame = Buf::new();
            frame.extend(&out[..total]);
            self.ring.push(Slot {
                seq: h.seq,
                sent: true,
                frame,
            });
            self.need_ack = false;
            return Some(self.sent(total));
        }
        if self.need_ack {
            return self.ack_frame(out);
        }
        self.check_complete();
        None
    }

    fn ack_frame(&mut self, out: &mut [u8]) -> Option<usize> {
        let c = self.send.as_ref()?;
        self.ack_ctr = self.ack_ctr.wrapping_add(1);
        let h = Header {
            flags: F_ACK,
            seq: self.ack_ctr,
            ack: self.expected,
            len: 0,
        };
        h.write(&mut out[..HEADER]);
        if c.seal(&mut out[..HEADER + TAG]).is_err() {
            return None;
        }
        self.need_ack = false;
        Some(self.sent(HEADER + TAG))
    }

    fn sent(&mut self, n: usize) -> usize {
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += n as u64;
        self.last_send = self.now;
        n
    }

    /// When to call [`Session::handle_timeout`] next (ms), if anything is in flight.
    pub fn poll_timeout(&self) -> Option<u64> {
        (!self.ring.is_empty() && self.state != State::Closed)
            .then_some(self.last_send + self.cfg.rto_ms)
    }

    /// Time passed: retransmit what is unacknowledged after the RTO (go-back-N).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.now = now_ms;
        if !self.ring.is_empty() && now_ms >= self.last_send + self.cfg.rto_ms {
            for s in self.ring.as_mut_slice() {
                s.sent = false;
            }
            self.stats.retransmits += 1;
        }
    }

    fn check_complete(&mut self) {
        if self.state == State::Open
            && self.done_sent
            && self.done_recv
            && self.ring.is_empty()
            && self.frag_off >= self.frag.len()
            && self.outq.is_empty()
            && self.sendq.is_empty()
        {
            self.state = State::Closed;
            self.need_ack = true;
            self.event(Event::Complete);
        }
    }

    // ---- input -------------------------------------------------------------------------

    /// One received frame. Refusals are counted and reported as events; the session goes
    /// on unless the refusal makes that impossible (then it closes, with an event).
    pub fn handle_input(&mut self, frame: &[u8], now_ms: u64) -> Result<(), Reject> {
        self.now = now_ms;
        let closed = self.state == State::Closed;
        let r = self.input(frame);
        if let Err(e) = r {
            if closed {
                self.stats.rejected[e as usize] += 1;
            } else {
                self.reject(e);
            }
        }
        self.check_complete();
        r
    }

    fn input(&mut self, frame: &[u8]) -> Result<(), Reject> {
        if self.state == State::Closed && self.recv.is_none() {
            return Err(Reject::Protocol);
        }
        if frame.len() > MAX_FRAME {
            return Err(Reject::TooLarge);
        }
        self.stats.frames_received += 1;
        self.stats.bytes_received += frame.len() as u64;
        let h = Header::parse(frame)?;
        let mut scratch: Buf<MAX_FRAME> = Buf::new();
        scratch.extend(frame);
        if h.flags & F_HANDSHAKE != 0 {
            if self.state != State::Handshake || h.flags & F_ACK != 0 {
                return Err(Reject::Protocol);
            }
        } else {
            let c = self.recv.as_ref().ok_or(Reject::Protocol)?;
            c.open(scratch.as_mut_slice())?;
        }
        // Cumulative ack.
        let acked = h.ack;
        let in_flight = self.next_seq.wrapping_sub(acked);
        if in_flight <= self.ring.len() as u32 {
            let mut i = 0;
            while i < self.ring.len() {
                if acked.wrapping_sub(self.ring.as_slice()[i].seq) as i32 > 0 {
                    self.ring.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        if self.state == State::Closed {
            // Complete (or closed) but the peer retransmits: it missed our last ack.
            if h.flags & (F_ACK | F_HANDSHAKE) == 0 {
                self.need_ack = true;
            }
            return Ok(());
        }
        if h.flags & F_ACK != 0 {
            if h.seq.wrapping_sub(self.peer_ack_ctr) as i32 <= 0 {
                return Err(Reject::Replay);
            }
            self.peer_ack_ctr = h.seq;
            return Ok(());
        }
        if h.seq != self.expected {
            self.need_ack = true;
            return Err(if (h.seq.wrapping_sub(self.expected) as i32) < 0 {
                Reject::Replay
            } else {
                Reject::OutOfOrder
            });
        }
        if self.held.is_some() {
            // Busy with a paused message: the peer retransmits this later.
            return Ok(());
        }
        self.expected = self.expected.wrapping_add(1);
        self.need_ack = true;
        let body = &scratch.as_slice()[HEADER..HEADER + h.len as usize];
        if !self.inbuf.extend(body) {
            self.close(Reject::TooLarge);
            return Err(Reject::TooLarge);
        }
        self.drain_inbuf();
        Ok(())
    }

    /// Fuzzing only: bytes as if they had arrived in order inside authenticated frames.
    #[cfg(feature = "fuzzing")]
    pub fn inject_stream(&mut self, bytes: &[u8]) {
        if self.state == State::Open && self.inbuf.extend(bytes) {
            self.drain_inbuf();
        }
    }

    /// Cut complete messages off the received stream and handle them, until one is held.
    fn drain_inbuf(&mut self) {
        while self.held.is_none() && self.state != State::Closed {
            let b = self.inbuf.as_slice();
            if b.len() < 2 {
                return;
            }
            let len = u16::from_le_bytes([b[0], b[1]]) as usize;
            if len > MAX_MSG {
                return self.close(Reject::TooLarge);
            }
            if b.len() < 2 + len {
                return;
            }
            self.msg.clear();
            self.msg.extend(&b[2..2 + len]);
            self.inbuf.consume(2 + len);
            self.on_message();
        }
    }

    fn on_message(&mut self) {
        let m = self.msg.as_slice();
        let Some((&tag, _)) = m.split_first() else {
            self.msg.clear();
            return self.reject(Reject::Malformed);
        };
        if self.state == State::Handshake {
            if tag != T_HELLO {
                self.msg.clear();
                return self.close(Reject::Protocol);
            }
            let mut body = [0u8; HELLO_LEN];
            let ok = m.len() == 1 + HELLO_LEN;
            if ok {
                body.copy_from_slice(&m[1..]);
            }
            self.msg.clear();
            if !ok {
                return self.close(Reject::Malformed);
            }
            return self.on_hello(&body);
        }
        match tag {
            T_RECON => {
                let Ok((head, rest)) = postcard::take_from_bytes::<ReconHead>(&m[1..]) else {
                    self.msg.clear();
                    return self.reject(Reject::Malformed);
                };
                if !head.from.valid() {
                    self.msg.clear();
                    return self.reject(Reject::Malformed);
                }
                let pos = m.len() - rest.len();
                self.held = Some(ReconIn {
                    pos,
                    left: head.count,
                    lower: head.from,
                    last: head.last,
                });
                self.resume_held();
                return;
            }
            T_WANT => match postcard::from_bytes::<heapless::Vec<Want, MAX_WANTS>>(&m[1..]) {
                Ok(ws) => {
                    for w in ws {
                        self.queue_prefix(w.id, w.offset);
                    }
                }
                Err(_) => self.reject(Reject::Malformed),
            },
            T_ITEM => self.on_item_chunk(),
            T_DONE => self.done_recv = true,
            T_CLOSE => {
                self.msg.clear();
                return self.close(Reject::PeerClosed);
            }
            _ => self.reject(Reject::Malformed),
        }
        self.msg.clear();
    }

    // ---- reconciliation ----------------------------------------------------------------

    fn start_recon(&mut self) {
        self.begin_out(Bound::ZERO);
        let n = self.store.ids().len();
        if n <= LIST_MAX {
            self.out_ids(Bound::INF, 0, n);
        } else {
            let parts = if n >= FIRST_BUCKETS * LIST_MAX * BUCKETS {
                FIRST_BUCKETS
            } else {
                BUCKETS
            };
            self.out_split(Bound::INF, 0, n, parts);
        }
        self.end_turn();
    }

    fn begin_out(&mut self, from: Bound) {
        self.out.msg.clear();
        self.out.count = 0;
        self.out.from = from;
        self.out.skip_upto = None;
        self.out.open = true;
    }

    /// Append one range to the output turn, flushing the message when it is full.
    fn out_range(&mut self, r: &Range) {
        let mut b = [0u8; 40 + LIST_MAX * 8];
        let Ok(enc) = postcard::to_slice(r, &mut b) else {
            return;
        };
        let n = enc.len();
        // Room for the tag and the head (tag, bound ≤ 18, last, count).
        if self.out.count == u8::MAX || 1 + 21 + self.out.msg.len() + n > MAX_MSG {
            let from = self.out_lower();
            self.flush_out(false);
            self.begin_out(from);
        }
        self.out.msg.extend(&b[..n]);
        self.out.count += 1;
    }

    /// Lower bound of the next range to be appended (the last range's upper bound).
    fn out_lower(&self) -> Bound {
        self.last_upper.unwrap_or(self.out.from)
    }

    fn emit_skip(&mut self) {
        if let Some(up) = self.out.skip_upto.take() {
            self.out_range(&Range {
                upper: up,
                mode: Mode::Skip,
            });
            self.last_upper = Some(up);
        }
    }

    fn out_skip(&mut self, upper: Bound) {
        self.out.skip_upto = Some(upper);
    }

    fn out_fp(&mut self, upper: Bound, fp: [u8; crate::recon::FP]) {
        self.emit_skip();
        self.out.nonskip = true;
        self.out_range(&Range {
            upper,
            mode: Mode::Fingerprint(fp),
        });
        self.last_upper = Some(upper);
    }

    fn out_ids(&mut self, upper: Bound, lo: usize, hi: usize) {
        self.emit_skip();
        self.out.nonskip = true;
        let mut v: heapless::Vec<Prefix, LIST_MAX> = heapless::Vec::new();
        for id in &self.store.ids()[lo..hi] {
            let _ = v.push(prefix(id));
        }
        self.out_range(&Range {
            upper,
            mode: Mode::Ids(v),
        });
        self.last_upper = Some(upper);
    }

    /// Fingerprints of `parts` parts of own ids `lo..hi`, the last ending at `upper`.
    fn out_split(&mut self, upper: Bound, lo: usize, hi: usize, parts: usize) {
        let n = hi - lo;
        for b in 0..parts {
            let s = lo + b * n / parts;
            let e = lo + (b + 1) * n / parts;
            let ids = self.store.ids();
            let up = if b + 1 == parts {
                upper
            } else {
                Bound::between(&ids[e - 1], &ids[e])
            };
            let fp = fingerprint(&ids[s..e]);
            self.out_fp(up, fp);
        }
    }

    fn flush_out(&mut self, last: bool) {
        self.flush_wants();
        let head = ReconHead {
            from: self.out.from,
            last,
            count: self.out.count,
        };
        let mut hb = [0u8; 32];
        let hn = postcard::to_slice(&head, &mut hb[1..]).map_or(0, |x| x.len());
        hb[0] = T_RECON;
        let len = 1 + hn + self.out.msg.len();
        if len > MAX_MSG || self.outq.free() < 5 + len {
            self.close(Reject::TooLarge);
        } else {
            self.outq.extend(&[0]);
            self.outq.extend(&(len as u32).to_le_bytes());
            self.outq.extend(&hb[..1 + hn]);
            self.outq.extend(self.out.msg.as_slice());
        }
        self.out.msg.clear();
        self.out.count = 0;
        self.out.open = false;
        self.stats.recon_messages += 1;
    }

    /// Close the output turn: trailing skips, `last`, and whether reconciliation is over.
    fn end_turn(&mut self) {
        if self.out.skip_upto.is_some() {
            self.emit_skip();
        }
        if self.out.count == 0 {
            // An empty turn still answers: one Skip to infinity.
            let r = Range {
                upper: Bound::INF,
                mode: Mode::Skip,
            };
            self.out_range(&r);
        }
        let nonskip = self.out.nonskip;
        self.flush_out(true);
        self.stats.recon_turns += 1;
        self.out.nonskip = false;
        self.last_upper = None;
        if !nonskip {
            self.recon_done = true;
        }
    }

    /// Process ranges of the held message while the out-queue has room.
    fn resume_held(&mut self) {
        while let Some(mut st) = self.held {
            if st.left == 0 {
                self.held = None;
                self.msg.clear();
                if st.last {
                    let answer = self.recv_turn_nonskip;
                    self.recv_turn_nonskip = false;
                    if answer {
                        self.end_turn();
                    } else {
                        // The peer's turn matched everything: nothing left to reconcile.
                        self.recon_done = true;
                        self.out.msg.clear();
                        self.out.count = 0;
                        self.out.open = false;
                        self.out.skip_upto = None;
                        self.last_upper = None;
                    }
                }
                return;
            }
            if self.outq.free() < RANGE_ROOM {
                return; // resumed from poll_transmit once the queue drains
            }
            if !self.out.open {
                self.begin_out(st.lower);
            }
            let m = self.msg.as_slice();
            let Ok((r, rest)) = postcard::take_from_bytes::<Range>(&m[st.pos..]) else {
                self.held = None;
                self.msg.clear();
                return self.reject(Reject::Malformed);
            };
            st.pos = m.len() - rest.len();
            st.left -= 1;
            let lower = st.lower;
            st.lower = r.upper;
            self.held = Some(st);
            if !r.upper.valid() {
                self.held = None;
                self.msg.clear();
                return self.reject(Reject::Malformed);
            }
            self.on_range(lower, &r);
        }
    }

    fn on_range(&mut self, lower: Bound, r: &Range) {
        let ids = self.store.ids();
        let lo = lower_index(ids, &lower);
        let hi = lower_index(ids, &r.upper).max(lo);
        match &r.mode {
            Mode::Skip => self.out_skip(r.upper),
            Mode::Fingerprint(fp) => {
                self.recv_turn_nonskip = true;
                if fingerprint(&ids[lo..hi]) == *fp {
                    self.out_skip(r.upper);
                } else if hi - lo <= LIST_MAX {
                    self.out_ids(r.upper, lo, hi);
                } else {
                    self.out_split(r.upper, lo, hi, BUCKETS);
                }
            }
            Mode::Ids(list) => {
                self.recv_turn_nonskip = true;
                if list.windows(2).any(|w| w[0] > w[1]) {
                    return self.reject(Reject::Malformed);
                }
                // Merge-walk own ids (by prefix) against the sender's prefixes.
                let (mut i, mut j) = (lo, 0);
                while i < hi || j < list.len() {
                    let ids = self.store.ids();
                    let a = ids.get(i).filter(|_| i < hi).map(|x| (prefix(x), *x));
                    match (a, list.get(j).copied()) {
                        (Some((px, _)), Some(y)) if px == y => {
                            i += 1;
                            j += 1;
                        }
                        (Some((px, x)), Some(y)) if px < y => {
                            self.queue_send(x, 0);
                            i += 1;
                        }
                        (Some((_, x)), None) => {
                            self.queue_send(x, 0);
                            i += 1;
                        }
                        (_, Some(y)) => {
                            self.want(y);
                            j += 1;
                        }
                        (None, None) => break,
                    }
                }
                self.out_skip(r.upper);
            }
        }
    }

    fn want(&mut self, id: Prefix) {
        let offset = match self.partial_id {
            Some((p, _)) if prefix(&p) == id => self.partial.len() as u32,
            _ => 0,
        };
        if !self.wants.push(Want { id, offset }) {
            self.flush_wants();
            self.wants.push(Want { id, offset });
        }
    }

    /// Queue every own item whose id starts with `p`.
    fn queue_prefix(&mut self, p: Prefix, offset: u32) {
        let ids = self.store.ids();
        let start = ids.partition_point(|x| prefix(x) < p);
        let mut k = start;
        while let Some(&id) = self.store.ids().get(k) {
            if prefix(&id) != p {
                break;
            }
            self.queue_send(id, offset);
            k += 1;
        }
    }

    fn flush_wants(&mut self) {
        if self.wants.is_empty() {
            return;
        }
        let mut v: heapless::Vec<Want, MAX_WANTS> = heapless::Vec::new();
        for w in self.wants.as_slice() {
            let _ = v.push(*w);
        }
        self.wants.clear();
        let mut b = [0u8; 1 + MAX_WANTS * 16 + 8];
        b[0] = T_WANT;
        let n = postcard::to_slice(&v, &mut b[1..]).map_or(0, |s| s.len());
        if self.push_msg(&b[..1 + n], false).is_err() {
            self.close(Reject::TooLarge);
        }
    }

    // ---- items -------------------------------------------------------------------------

    fn queue_send(&mut self, id: Id, offset: u32) {
        if self.store.item_len(&id).is_none() || self.budget_hit {
            return;
        }
        if let Some(e) = self.sendq.as_mut_slice().iter_mut().find(|e| e.0 == id) {
            e.1 = offset;
            return;
        }
        if self.sendq.push((id, offset)) {
            self.sendq_dirty = true;
        }
        // A full queue leaves the rest for the next session (reconciliation finds it again).
    }

    /// Next chunk of the most valuable queued item into `frag`.
    fn item_chunk(&mut self) -> bool {
        if self.sendq.is_empty() {
            return false;
        }
        if self.sendq_dirty {
            // Most valuable first; the item in progress (offset > 0) stays in front.
            let st = &self.store;
            self.sendq
                .as_mut_slice()
                .sort_unstable_by_key(|e| (e.1 == 0, core::cmp::Reverse(st.value(&e.0))));
            self.sendq_dirty = false;
        }
        let (id, offset) = self.sendq.as_slice()[0];
        let Some(total) = self.store.item_len(&id) else {
            self.sendq.remove(0);
            return self.item_chunk();
        };
        if offset == 0 {
            let len = total as u64;
            if self.stats.item_bytes_sent + len > self.cfg.byte_budget {
                self.sendq.clear();
                self.budget_hit = true;
                self.event(Event::BudgetExhausted);
                return false;
            }
        }
        let offset = (offset as usize).min(total);
        let n = (total - offset).min(CHUNK);
        let head = ItemHead {
            id,
            offset: offset as u32,
            total: total as u32,
        };
        self.frag.clear();
        self.frag.extend(&[0, 0, T_ITEM]);
        let mut b = [0u8; 48];
        let hn = postcard::to_slice(&head, &mut b).map_or(0, |s| s.len());
        self.frag.extend(&b[..hn]);
        let at = self.frag.len();
        self.frag.resize(at + n);
        let got = self
            .store
            .read(&id, offset, &mut self.frag.as_mut_slice()[at..at + n]);
        self.frag.resize(at + got);
        let len = (self.frag.len() - 2) as u16;
        self.frag.as_mut_slice()[..2].copy_from_slice(&len.to_le_bytes());
        self.frag_off = 0;
        self.frag_hs = false;
        self.stats.item_bytes_sent += got as u64;
        if offset + got >= total || got == 0 {
            self.sendq.remove(0);
            self.stats.items_sent += 1;
        } else {
            self.sendq.as_mut_slice()[0].1 = (offset + got) as u32;
        }
        true
    }

    fn on_item_chunk(&mut self) {
        let m = self.msg.as_slice();
        let Ok((head, data)) = postcard::take_from_bytes::<ItemHead>(&m[1..]) else {
            return self.reject(Reject::Malformed);
        };
        let total = head.total as usize;
        if total > MAX_ITEM || head.offset as usize + data.len() > total {
            return self.reject(Reject::TooLarge);
        }
        if head.offset == 0 {
            self.partial.clear();
            self.partial_id = Some((head.id, head.total));
        } else if self.partial_id != Some((head.id, head.total))
            || self.partial.len() != head.offset as usize
        {
            return self.reject(Reject::OutOfOrder);
        }
        let mut chunk: Buf<MAX_MSG> = Buf::new();
        chunk.extend(data);
        self.partial.extend(chunk.as_slice());
        if self.partial.len() < total {
            return;
        }
        self.partial_id = None;
        let bytes: Buf<MAX_ITEM> = core::mem::take(&mut self.partial);
        let r = self.accept(&head.id, bytes.as_slice());
        self.partial = bytes;
        self.partial.clear();
        match r {
            Ok(new) => {
                self.stats.items_received += 1;
                self.event(Event::Stored { id: head.id, new });
            }
            Err(e) => self.reject(e),
        }
    }

    /// Verify an item (signature, id, fleet membership, base model) and store it.
    fn accept(&mut self, id: &Id, bytes: &[u8]) -> Result<bool, Reject> {
        let item = Item::verify(bytes)?;
        if &item.id != id {
            return Err(Reject::Forged);
        }
        if !self.cfg.fleet.contains(&item.origin) {
            return Err(Reject::NotMember);
        }
        if item.kind == Kind::Contribution
            && item.contribution().map(|c| c.base) != Some(self.cfg.base_model)
        {
            return Err(Reject::WrongBaseModel);
        }
        self.store.insert(&item)
    }
}
