//! cairn-sync: devices that meet rarely, over lossy links or a USB stick, bring each other
//! up to date — memory records, tombstones, metadata updates and adapter contributions —
//! with every item signed by its origin and every session authenticated and encrypted.
//!
//! - [`session`]: the sans-IO state machine (bytes and time in; bytes, events out);
//! - [`recon`]: range-based set reconciliation (cost grows with the difference);
//! - [`frame`], [`msg`]: the wire (spec: `runtime/sync/spec.md`);
//! - [`item`], [`fleet`]: signed items and the signed membership list;
//! - [`replica`] (`alloc`): an in-memory item set with the merge rules;
//! - [`bundle`]: sneakernet files (a streaming writer and the importer need no alloc).
//!
//! Without `alloc` the session runs with fixed capacities (frames ≤ 512 bytes, messages
//! ≤ 2 KB, 64 queued items) against any [`Store`].
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod buf;
pub mod bundle;
pub mod fleet;
pub mod frame;
pub mod hlc;
pub mod item;
pub mod msg;
pub mod recon;
#[cfg(feature = "alloc")]
pub mod replica;
pub mod session;
#[cfg(feature = "std")]
pub mod testkit;

pub use item::Item;
pub use recon::Id;
pub use session::{Config, Event, Role, Session, Stats};

/// Why something received was refused. Counted per reason in [`Stats::rejected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reject {
    /// Bytes that do not parse.
    Malformed = 0,
    /// An unknown wire version.
    Version = 1,
    /// A frame whose AEAD tag fails (tampered, or from another session).
    AuthFailed = 2,
    /// A frame already received (a replay, or a retransmission that crossed an ack).
    Replay = 3,
    /// A frame ahead of the next expected one (a loss before it); resent by the peer.
    OutOfOrder = 4,
    /// A signature that does not verify.
    BadSignature = 5,
    /// An item whose content does not match its id or claimed origin.
    Forged = 6,
    /// An origin or peer not in the fleet's membership list.
    NotMember = 7,
    /// A contribution for another base model.
    WrongBaseModel = 8,
    /// Over a size limit (frame, message, item, MTU).
    TooLarge = 9,
    /// A message out of place in the protocol.
    Protocol = 10,
    /// An origin over its cap, or a contribution over the norm bound.
    Capped = 11,
    /// The local store is full.
    StoreFull = 12,
    /// The peer closed the session.
    PeerClosed = 13,
    /// An authority statement not signed by the fleet authority.
    NotAuthority = 14,
    /// An item, session or bundle from a key the fleet authority revoked.
    Revoked = 15,
    /// A tombstone whose signer is neither its target record's origin nor a designated
    /// deleter, or whose target is not a record.
    NotOwner = 16,
}

impl Reject {
    pub const COUNT: usize = 17;
}

/// What the session syncs: a set of signed items addressed by content id.
pub trait Store {
    /// Every id held, sorted ascending and distinct. Deleted records are not listed (their
    /// tombstones are): whether a tombstone applies depends on its target's origin, which
    /// a node that never saw the record cannot check, so listing deleted ids would leave
    /// id sets differing for good. A peer still holding a deleted record sends it once and
    /// takes the tombstone in the same session.
    fn ids(&self) -> &[Id];
    /// Length of an item this store can send (`None`: unknown or deleted).
    fn item_len(&self, id: &Id) -> Option<usize>;
    /// Copy item bytes from `offset` into `out`; bytes copied.
    fn read(&self, id: &Id, offset: usize, out: &mut [u8]) -> usize;
    /// Send order: larger first (importance, recency, novelty — the store decides).
    fn value(&self, id: &Id) -> u64;
    /// Apply a verified item (idempotent); `Ok(true)` if it was new. The caller has checked
    /// the origin against the fleet ([`fleet::Fleet::admits`]); the store applies its own
    /// rules (revocations, tombstone ownership) and refuses with a typed reason.
    fn insert(&mut self, item: &Item<'_>) -> Result<bool, Reject>;
    /// What [`Store::insert`] would answer for `item`, changing nothing: a store that
    /// applies items elsewhere first (a node's memory) asks before acting. The default,
    /// for stores that keep no rules, admits everything.
    fn admits(&self, _item: &Item<'_>) -> Result<bool, Reject> {
        Ok(true)
    }
    /// Whether an authority revocation of `key` is held: the session refuses such a peer.
    fn revoked(&self, _key: &[u8; 32]) -> bool {
        false
    }
}
