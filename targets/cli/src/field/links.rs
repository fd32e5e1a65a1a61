//! How the devices meet: A and B over cairn-sim's lossy radio (real sync sessions), B's
//! bundle carried to C, and what an attacker does to a bundle on the way.

use anyhow::{anyhow, Context, Result};
use cairn_memory::Record;
use cairn_node::Outcome;
use cairn_sim::contact::{self, Contact, ContactReport};
use cairn_sim::flash::Power;
use cairn_sim::fleet::SimNodeInner;
use cairn_sim::link::Direction;
use cairn_sim::rng::Rng;
use cairn_sync::item::{node_id, sign_into, Kind, MAX_ITEM};
use ed25519_dalek::SigningKey;

use super::devices::Kit;
use super::{
    active_params, e, CarryFigures, LinkFigures, Settings, BANDWIDTH_BPS, LATENCY_MS, MAX_CONTACTS,
    MTU, WINDOW_MS,
};

/// A and B meet over the lossy radio until a contact's sessions complete; both judge the
/// merged adapter after each contact.
pub(super) fn radio(
    a: &mut SimNodeInner<'_>,
    b: &mut SimNodeInner<'_>,
    powers: (&Power, &Power),
    s: &Settings,
    rng: &mut Rng,
) -> Result<(LinkFigures, Option<Outcome>)> {
    let dir = Direction {
        loss: s.loss,
        duplicate: s.duplicate,
        reorder: 0.05,
        corrupt: s.corrupt,
        latency_ms: LATENCY_MS,
        bandwidth_bps: BANDWIDTH_BPS,
    };
    let mut fig = LinkFigures::default();
    let mut merge_b = None;
    let mut start = 0;
    while fig.contacts < MAX_CONTACTS && !fig.complete {
        let c = Contact {
            ab: &dir,
            ba: &dir,
            mtu: MTU,
            start_ms: start,
            window_ms: WINDOW_MS,
            byte_budget: u64::MAX,
        };
        let rep = contact::run(a, b, powers, &c, rng, None).map_err(|x| anyhow!(x))?;
        add_contact(&mut fig, &rep);
        a.apply().map_err(e)?;
        if let Some(o) = b.apply().map_err(e)? {
            merge_b = Some(o);
        }
        start += WINDOW_MS;
    }
    fig.radio_ms = start;
    Ok((fig, merge_b))
}

fn add_contact(fig: &mut LinkFigures, rep: &ContactReport) {
    fig.contacts += 1;
    fig.complete = rep.complete;
    fig.bytes += rep.bytes;
    fig.first_sends += rep.first_sends;
    fig.frames += rep.frames;
    fig.lost += rep.lost;
    fig.corrupted += rep.corrupted;
    fig.retransmits += rep.retransmits;
    fig.items += rep.items;
    for (f, r) in fig.rejected.iter_mut().zip(rep.rejected) {
        *f += r as u64;
    }
}

/// A signed record item that claims `origin` as its maker, signed by `key`.
fn record_item(key: &SigningKey, origin: u64, dim: usize) -> Result<Vec<u8>> {
    let emb = vec![9i8; dim];
    let r = Record {
        origin,
        timestamp_ms: 1,
        label: 0,
        importance: 255,
        meta: [0; 4],
        scale: 0.05,
        embedding: &emb,
        payload: &[],
    };
    let mut body = vec![0u8; r.encoded_len()];
    r.encode(&mut body).map_err(e)?;
    let mut out = vec![0u8; MAX_ITEM];
    let n = sign_into(key, Kind::Record, &body, &mut out).map_err(e)?;
    out.truncate(n);
    Ok(out)
}

/// Offsets and lengths of a bundle's entries (the item bytes), up to its trailer or the
/// first entry that is not whole.
fn entries(bundle: &[u8]) -> Vec<(usize, usize)> {
    const BUNDLE_HEAD: usize = 4 + 1 + 32 + 8;
    let mut out = Vec::new();
    let mut pos = BUNDLE_HEAD;
    while let Some(field) = bundle.get(pos..).and_then(|rest| rest.get(..4)) {
        if field == b"CEND" {
            break;
        }
        let len = u32::from_le_bytes([field[0], field[1], field[2], field[3]]) as usize;
        let end = pos + 4 + len.min(MAX_ITEM);
        if len > MAX_ITEM || end > bundle.len() {
            break;
        }
        out.push((pos + 4, len));
        pos = end;
    }
    out
}

/// B's bundle after it passed through an attacker's hands: one bit flipped in A's
/// contribution (in the first item when there is none), and a record "by A" that the
/// outsider signed spliced in before the trailer (which no longer matches).
fn tamper(bundle: &[u8], forged: &[u8]) -> Result<Vec<u8>> {
    let list = entries(bundle);
    let &(at, len) = list
        .iter()
        .find(|&&(at, _)| bundle.get(at + 2) == Some(&(Kind::Contribution as u8)))
        .or(list.first())
        .context("B's bundle holds no item")?;
    let end = list.last().map_or(at + len, |&(a, l)| a + l);
    let mut out = bundle[..end].to_vec();
    if let Some(byte) = out.get_mut(at + len / 2) {
        *byte ^= 0x10;
    }
    out.extend_from_slice(&(forged.len() as u32).to_le_bytes());
    out.extend_from_slice(forged);
    out.extend_from_slice(&bundle[end..]);
    Ok(out)
}

/// The sneakernet hop: B writes its bundle to a file, which is carried to C. On the way C
/// is handed a tampered copy and an outsider's own bundle first.
pub(super) fn carry(
    kit: &Kit,
    b: &mut SimNodeInner<'_>,
    c: &mut SimNodeInner<'_>,
) -> Result<(CarryFigures, Option<Outcome>)> {
    let mut bytes = Vec::new();
    let items = b
        .export_bundle(0, &mut |x| {
            bytes.extend_from_slice(x);
            true
        })
        .map_err(e)?;
    let dir = std::env::temp_dir().join(format!("cairn-field-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("B.cbdl");
    std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
    let carried = std::fs::read(&file);
    let _ = std::fs::remove_dir_all(&dir);
    let carried = carried.context("reading the carried bundle")?;

    let a_id = node_id(
        &SigningKey::from_bytes(&kit.seeds[0])
            .verifying_key()
            .to_bytes(),
    );
    let forged = record_item(&kit.outsider, a_id, kit.fin)?;
    let adapter_before = active_params(c)?;
    let tampered = c.import_bundle(&tamper(&carried, &forged)?, 0).map_err(e)?;
    let mut merge_c = c.apply().map_err(e)?;
    let tampered_changed_adapter = active_params(c)? != adapter_before;

    let outsider_bundle = outsider_bundle(kit)?;
    let outsider = match c.import_bundle(&outsider_bundle, 0) {
        Err(cairn_node::NodeError::Sync(r)) => Some(r),
        Err(x) => return Err(e(x)),
        Ok(_) => None,
    };

    let genuine = c.import_bundle(&carried, 0).map_err(e)?;
    if let Some(o) = c.apply().map_err(e)? {
        merge_c = Some(o);
    }
    let fig = CarryFigures {
        bundle_bytes: carried.len(),
        items,
        tampered,
        tampered_changed_adapter,
        outsider,
        genuine,
    };
    Ok((fig, merge_c))
}

/// A bundle the outsider signed, holding one record of its own.
fn outsider_bundle(kit: &Kit) -> Result<Vec<u8>> {
    let me = node_id(&kit.outsider.verifying_key().to_bytes());
    let item = record_item(&kit.outsider, me, kit.fin)?;
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| out.extend_from_slice(b);
    let mut w = cairn_sync::bundle::BundleWriter::start(&kit.outsider, 0, &mut sink);
    w.item(&item, &mut sink);
    w.finish(&kit.outsider, &mut sink);
    Ok(out)
}
