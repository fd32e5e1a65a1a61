//! Sharing, over a node's parts: sign its own records into the item set, write bundles,
//! apply bundles. [`crate::Node`] calls these with its own parts; a target whose handles
//! keep the parts apart (the C library's memory and sync handles) calls them directly, so
//! no target signs or applies anything by hand.

use cairn_memory::ram::Ram;
use cairn_memory::record::FIXED;
use cairn_memory::store::LogStore;
use cairn_memory::{Id, StoreError};
use cairn_sync::bundle::{self, BundleWriter, ImportReport};
use cairn_sync::item::{sign_into, Item, Kind, HEAD, SIG};
use cairn_sync::Reject;
use embedded_storage::nor_flash::NorFlash;

use crate::apply::{Applier, ApplyReport, Items};
use crate::identity::Identity;
use crate::{NodeError, MAX_FEATURES};

/// Largest record (encoded) a node signs for sync: features up to [`MAX_FEATURES`] and a
/// payload of up to 1 KiB. Larger own records stay in memory and are counted as
/// unpublishable.
pub const MAX_PUBLISHED_RECORD: usize = FIXED + MAX_FEATURES + 1024;

/// What [`publish`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub added: u32,
    /// Own records too large to sign (see [`MAX_PUBLISHED_RECORD`]).
    pub unpublishable: u32,
}

/// Sign `identity`'s records in `memory` that `items` lacks into it (Ed25519 signatures
/// are deterministic: re-signing after a restart gives the same items).
pub fn publish<F: NorFlash, R: Ram, S: Items>(
    identity: &Identity<'_>,
    memory: &mut LogStore<F, R>,
    items: &mut S,
) -> Result<Published, NodeError> {
    let me = identity.node_id();
    let mut done = Published::default();
    let mut at = 0;
    while at < memory.len() {
        let m = memory.metas()[at];
        at += 1;
        if m.origin != me || items.knows(&m.id) {
            continue;
        }
        let mut body = [0u8; MAX_PUBLISHED_RECORD];
        let mut out = [0u8; MAX_PUBLISHED_RECORD + HEAD + SIG];
        let len = match memory.read_record(&m.id, &mut body) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(StoreError::BufferTooSmall) => {
                done.unpublishable += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let item = sign(identity, Kind::Record, m.id, &body[..len], &mut out)?;
        if items.insert(&item).map_err(NodeError::Sync)? {
            done.added += 1;
        }
    }
    Ok(done)
}

/// Sign `body` as an item of `kind` into `out`. Record items' ids are the record's content
/// id (`record_id`); other kinds' the hash of the signed bytes.
pub fn sign<'o>(
    identity: &Identity<'_>,
    kind: Kind,
    record_id: Id,
    body: &[u8],
    out: &'o mut [u8],
) -> Result<Item<'o>, NodeError> {
    let n = sign_into(identity.key(), kind, body, out).map_err(NodeError::Sync)?;
    let bytes = &out[..n];
    if kind != Kind::Record {
        return Item::verify(bytes).map_err(NodeError::Sync);
    }
    Ok(Item {
        id: record_id,
        kind,
        origin: *identity.public(),
        body: &bytes[HEAD..n - SIG],
        bytes,
    })
}

/// Apply a bundle (possibly cut short) from byte `from`: records into `memory` (an item is
/// taken only once its record is durable), everything into `items`. Contributions for
/// another base model than `base` are refused.
#[allow(clippy::too_many_arguments)]
pub fn import_bundle<F: NorFlash, R: Ram, S: Items>(
    identity: &Identity<'_>,
    base: &[u8; 32],
    memory: &mut LogStore<F, R>,
    items: &mut S,
    report: &mut ApplyReport,
    bytes: &[u8],
    from: usize,
) -> Result<ImportReport, NodeError> {
    let mut store = Applier {
        items,
        memory,
        report,
    };
    bundle::import(bytes, from, &mut store, &identity.fleet(), base).map_err(NodeError::Sync)
}

/// Take one signed item that came outside a session or a bundle (an authority statement
/// made on this device, an item carried in a file): its signature verified, its origin
/// admitted by the fleet (statements only from the authority, every other kind only from
/// a member), then applied like an arrival: a record goes into memory, a revocation drops
/// the revoked key's records. `Ok(true)` if it was new.
pub fn accept<F: NorFlash, R: Ram, S: Items>(
    identity: &Identity<'_>,
    memory: &mut LogStore<F, R>,
    items: &mut S,
    report: &mut ApplyReport,
    bytes: &[u8],
) -> Result<bool, NodeError> {
    use cairn_sync::Store as _;
    let item = Item::verify(bytes).map_err(NodeError::Sync)?;
    identity.fleet().admits(&item).map_err(NodeError::Sync)?;
    let mut store = Applier {
        items,
        memory,
        report,
    };
    store.insert(&item).map_err(NodeError::Sync)
}

/// Write a bundle of every item that arrived since `mark` (own records published first)
/// into `sink`, which returns `false` when it cannot take more: then the export fails (a
/// cut bundle never passes for a whole one). Returns the items written.
pub fn export_bundle<F: NorFlash, R: Ram, S: Items>(
    identity: &Identity<'_>,
    memory: &mut LogStore<F, R>,
    items: &mut S,
    mark: u64,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<u32, NodeError> {
    publish(identity, memory, items)?;
    let mut ok = true;
    let mut out = |b: &[u8]| ok &= sink(b);
    let key = identity.key();
    let mut w = BundleWriter::start(key, mark, &mut out);
    let mut count = 0;
    items.for_each_since(mark, &mut |_, bytes| {
        w.item(bytes, &mut out);
        count += 1;
    });
    w.finish(key, &mut out);
    if !ok {
        return Err(NodeError::Sync(Reject::TooLarge));
    }
    Ok(count)
}

/// Write a bundle of what `identity` authored: its records in `memory`, signed as they are
/// read (no item set needed: firmware without an allocator), then the adapter
/// contributions it signed that `items` keeps. Same sink contract as [`export_bundle`].
pub fn export_own<F: NorFlash, R: Ram, S: Items>(
    identity: &Identity<'_>,
    memory: &mut LogStore<F, R>,
    items: &S,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<u32, NodeError> {
    let mut ok = true;
    let mut out = |b: &[u8]| ok &= sink(b);
    let mut w = BundleWriter::start(identity.key(), 0, &mut out);
    let mut count = own_records(identity, memory, &mut |b| w.item(b, &mut out))?;
    // Its contributions, streamed from the set (no buffer of an item's size): the kind
    // byte and the origin key come first in an item.
    let mut streamed = true;
    for id in items.ids() {
        let mut head = [0u8; 36];
        let Some(len) = items.item_len(id) else {
            continue;
        };
        if items.read(id, 0, &mut head) != head.len()
            || head[2] != Kind::Contribution as u8
            || &head[4..36] != identity.public()
        {
            continue;
        }
        streamed &= w.item_streamed(len, &mut |at, buf| items.read(id, at, buf), &mut out);
        count += 1;
    }
    w.finish(identity.key(), &mut out);
    if !streamed {
        return Err(NodeError::Sync(Reject::StoreFull));
    }
    if !ok {
        return Err(NodeError::Sync(Reject::TooLarge));
    }
    Ok(count)
}

/// Sign `identity`'s records in `memory` one at a time into `each`; how many. (Out of line:
/// its two record buffers leave the stack before the caller reads other items.)
#[inline(never)]
fn own_records<F: NorFlash, R: Ram>(
    identity: &Identity<'_>,
    memory: &mut LogStore<F, R>,
    each: &mut dyn FnMut(&[u8]),
) -> Result<u32, NodeError> {
    let me = identity.node_id();
    let mut count = 0;
    for at in 0..memory.len() {
        let m = memory.metas()[at];
        if m.origin != me {
            continue;
        }
        let mut body = [0u8; MAX_PUBLISHED_RECORD];
        let mut item = [0u8; MAX_PUBLISHED_RECORD + HEAD + SIG];
        let Some(len) = memory.read_record(&m.id, &mut body)? else {
            continue;
        };
        let n = sign_into(identity.key(), Kind::Record, &body[..len], &mut item)
            .map_err(NodeError::Sync)?;
        each(&item[..n]);
        count += 1;
    }
    Ok(count)
}
