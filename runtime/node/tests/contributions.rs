//! Adapter contributions on a node without an allocator (`Contributions`, the firmware's
//! item set): kept on flash and reloaded, the replica's rules (cap per origin, revocation),
//! refusals that keep nothing (full, too large, capped, revoked), and every power cut while
//! a contribution is written leaving the set as it was or with the contribution whole.

use cairn_memory::flash::{FaultyFlash, RamFlash};
use cairn_node::contributions::Reopened;
use cairn_node::{Contributions, Items, Revocations};
use cairn_sync::item::{
    contribution_body, sign_into, statement_body, Action, ContributionHead, Item, Kind, Statement,
};
use cairn_sync::{Id, Reject, Store};
use ed25519_dalek::SigningKey;

type Statements = Revocations<RamFlash<256>, 3>;
/// Four slots of 512 bytes (a contribution of 16 values is 224 bytes).
type Set<F> = Contributions<F, Statements, 4, 512>;
const CAP: u32 = 2;

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}
fn authority() -> SigningKey {
    key(0xA0)
}

/// A contribution of `dim` values signed by `who` for adapter `adapter`; `n` makes it
/// distinct.
fn contribution(who: u8, adapter: u8, n: u32, dim: usize) -> Vec<u8> {
    let values: Vec<f32> = (0..dim).map(|i| (i as f32 - 3.5) * n as f32).collect();
    let head = ContributionHead {
        base: [7; 32],
        key: [adapter; 16],
        n,
        dim: dim as u32,
    };
    let mut body = vec![0u8; cairn_sync::item::CONTRIB_HEAD + 4 * dim];
    let len = contribution_body(&head, &values, &mut body).unwrap();
    let mut out = vec![0u8; len + 200];
    let il = sign_into(&key(who), Kind::Contribution, &body[..len], &mut out).unwrap();
    out.truncate(il);
    out
}

fn revoke(who: u8) -> Vec<u8> {
    let s = Statement {
        action: Action::Revoke,
        subject: key(who).verifying_key().to_bytes(),
        hlc: 1,
    };
    let mut out = vec![0u8; 512];
    let n = sign_into(&authority(), Kind::Authority, &statement_body(&s), &mut out).unwrap();
    out.truncate(n);
    out
}

fn statements(flash: RamFlash<256>) -> Statements {
    Revocations::open(flash, &authority().verifying_key().to_bytes()).unwrap()
}

fn open<F: embedded_storage::nor_flash::NorFlash>(
    flash: F,
    st: RamFlash<256>,
) -> (Set<F>, Reopened) {
    Set::open(flash, statements(st), CAP, &mut [0; 512]).unwrap()
}

fn insert<F: embedded_storage::nor_flash::NorFlash>(
    set: &mut Set<F>,
    bytes: &[u8],
) -> Result<bool, Reject> {
    set.insert(&Item::verify(bytes).unwrap())
}

/// Every held item's bytes, by id.
fn held<F: embedded_storage::nor_flash::NorFlash>(set: &Set<F>) -> Vec<(Id, Vec<u8>)> {
    set.ids()
        .iter()
        .map(|id| {
            let mut b = vec![0u8; set.item_len(id).unwrap()];
            assert_eq!(set.read(id, 0, &mut b), b.len());
            (*id, b)
        })
        .collect()
}

fn region() -> RamFlash<512> {
    RamFlash::new(Set::<RamFlash<512>>::flash_bytes().div_ceil(512))
}

#[test]
fn contributions_are_kept_in_id_order_and_reload_after_a_restart() {
    let (mut set, found) = open(region(), RamFlash::new(1));
    assert_eq!(found, Reopened::default());
    let items = [
        contribution(1, 1, 5, 16),
        contribution(2, 1, 6, 16),
        contribution(3, 2, 7, 16),
    ];
    for it in &items {
        assert_eq!(insert(&mut set, it), Ok(true));
        assert_eq!(insert(&mut set, it), Ok(false), "a second copy is no news");
    }
    let ids = set.ids().to_vec();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ascending");
    let mut want: Vec<(Id, Vec<u8>)> = items
        .iter()
        .map(|b| (Item::verify(b).unwrap().id, b.clone()))
        .collect();
    want.sort();
    assert_eq!(held(&set), want);
    // A read from an offset gives the tail.
    let mut tail = [0u8; 10];
    assert_eq!(set.read(&want[0].0, 100, &mut tail), 10);
    assert_eq!(&tail[..], &want[0].1[100..110]);
    // Adapter keys: only adapter 1's two.
    let mut seen = Vec::new();
    set.for_each_contribution(&[1; 16], &mut |id| seen.push(*id));
    assert_eq!(seen.len(), 2);
    // Since a mark: only what came after it.
    let mark = set.mark();
    let fourth = contribution(1, 2, 8, 16);
    assert_eq!(insert(&mut set, &fourth), Ok(true));
    let mut since = Vec::new();
    set.for_each_since(mark, &mut |_, b| since.push(b.to_vec()));
    assert_eq!(since, vec![fourth.clone()]);

    // Restart: the same items, verified again.
    let before = held(&set);
    let (flash, st) = set.into_parts();
    let (set, found) = open(flash, st.into_flash());
    assert_eq!(found.held, 4);
    assert_eq!((found.damaged, found.revoked), (0, 0));
    assert_eq!(held(&set), before);
}

#[test]
fn refusals_keep_nothing_and_say_why() {
    let (mut set, _) = open(region(), RamFlash::new(1));
    // Over the slot size.
    let big = contribution(1, 1, 1, 200);
    assert_eq!(insert(&mut set, &big), Err(Reject::TooLarge));
    // The cap per origin and adapter key (the replica's policy).
    assert_eq!(insert(&mut set, &contribution(1, 1, 1, 16)), Ok(true));
    assert_eq!(insert(&mut set, &contribution(1, 1, 2, 16)), Ok(true));
    let third = contribution(1, 1, 3, 16);
    assert_eq!(
        set.admits(&Item::verify(&third).unwrap()),
        Err(Reject::Capped)
    );
    assert_eq!(insert(&mut set, &third), Err(Reject::Capped));
    // Another adapter key of the same origin is not capped.
    assert_eq!(insert(&mut set, &contribution(1, 2, 3, 16)), Ok(true));
    assert_eq!(insert(&mut set, &contribution(2, 1, 3, 16)), Ok(true));
    // Every slot used: refused, not acknowledged.
    let fifth = contribution(3, 1, 4, 16);
    assert_eq!(insert(&mut set, &fifth), Err(Reject::StoreFull));
    assert_eq!(set.len(), 4);
    assert_eq!(set.free_slots(), 0);
    assert!(!set.knows(&Item::verify(&fifth).unwrap().id));
    // A record is not kept here (memory keeps records): the inner set takes it.
    let rec = cairn_sync::testkit::signed_record(&key(1), 1, 1, &[], 8);
    assert_eq!(insert(&mut set, &rec), Ok(true));
    assert_eq!(set.len(), 4);
}

#[test]
fn a_revocation_drops_the_keys_contributions_now_and_after_a_restart() {
    let (mut set, _) = open(region(), RamFlash::new(1));
    let (a, b) = (contribution(1, 1, 1, 16), contribution(2, 1, 2, 16));
    insert(&mut set, &a).unwrap();
    insert(&mut set, &b).unwrap();
    assert_eq!(insert(&mut set, &revoke(1)), Ok(true));
    let b_id = Item::verify(&b).unwrap().id;
    assert_eq!(set.ids(), &[b_id]);
    assert_eq!(
        insert(&mut set, &contribution(1, 1, 9, 16)),
        Err(Reject::Revoked)
    );
    assert_eq!(insert(&mut set, &a), Err(Reject::Revoked));
    // Restart: the statement reloads first, so the revoked key's slot stays dropped.
    let (flash, st) = set.into_parts();
    let (set, found) = open(flash, st.into_flash());
    assert_eq!(found.held, 1);
    assert_eq!(found.revoked, 1);
    assert_eq!(set.ids(), &[b_id]);
    // Its slot is still used: two of the four are left.
    assert_eq!(set.free_slots(), 2);
}

#[test]
fn damaged_slots_are_skipped_at_open() {
    let (mut set, _) = open(region(), RamFlash::new(1));
    let (a, b) = (contribution(1, 1, 1, 16), contribution(2, 1, 2, 16));
    insert(&mut set, &a).unwrap();
    insert(&mut set, &b).unwrap();
    let (mut flash, st) = set.into_parts();
    // A bit of the first slot's item flipped: the header (12 bytes), the slot head (8).
    let first_item = 12 + 8 + 50;
    flash.data[first_item] ^= 0x04;
    let (set, found) = open(flash, st.into_flash());
    assert_eq!((found.held, found.damaged), (1, 1), "{found:?}");
    assert_eq!(set.ids(), &[Item::verify(&b).unwrap().id]);
    assert_eq!(set.free_slots(), 2);
}

#[test]
fn every_power_cut_while_a_contribution_is_written_keeps_it_whole_or_not_at_all() {
    // The first contribution is written cleanly; the second is cut after k programmed
    // bytes, for every k until it completes.
    let (a, b) = (contribution(1, 1, 1, 16), contribution(2, 1, 2, 16));
    let b_id = Item::verify(&b).unwrap().id;
    let a_id = Item::verify(&a).unwrap().id;
    let mut completed = false;
    for k in 0.. {
        let (mut set, _) = open(region(), RamFlash::new(1));
        insert(&mut set, &a).unwrap();
        let (flash, st) = set.into_parts();
        let faulty = FaultyFlash::new(flash).cut_after(k);
        let st_flash = st.into_flash();
        let (mut set, _) = open(faulty, st_flash.clone());
        let acked = insert(&mut set, &b) == Ok(true);
        let (faulty, _) = set.into_parts();
        let dead = faulty.is_dead();
        let (set, found) = open(faulty.inner, st_flash);
        let ids = set.ids().to_vec();
        if acked {
            assert!(!dead, "cut at {k}: acknowledged though the power was cut");
            assert!(ids.contains(&b_id), "cut at {k}: an acknowledged item lost");
        }
        assert!(ids.contains(&a_id), "cut at {k}: the earlier item lost");
        if ids.contains(&b_id) {
            let mut bytes = vec![0u8; b.len()];
            assert_eq!(set.read(&b_id, 0, &mut bytes), b.len());
            assert_eq!(bytes, b, "cut at {k}: the item reloaded changed");
        } else if found.damaged == 0 && k > 0 {
            // A cut before the slot head left the slot free.
            assert_eq!(set.free_slots(), 3, "cut at {k}");
        }
        if !dead {
            completed = true;
            break;
        }
    }
    assert!(completed);
}

#[test]
fn a_region_too_small_or_formatted_for_another_slot_size() {
    assert!(matches!(
        Set::open(
            RamFlash::<512>::new(1),
            statements(RamFlash::new(1)),
            CAP,
            &mut [0; 512]
        ),
        Err(cairn_memory::StoreError::Geometry)
    ));
    // A region written with 512-byte slots opened with 1024-byte ones is reformatted.
    let (mut set, _) = open(region(), RamFlash::new(1));
    insert(&mut set, &contribution(1, 1, 1, 16)).unwrap();
    let (flash, st) = set.into_parts();
    let mut bigger = RamFlash::<512>::new(
        Contributions::<RamFlash<512>, Statements, 4, 1024>::flash_bytes().div_ceil(512),
    );
    bigger.data[..flash.data.len()].copy_from_slice(&flash.data);
    let (set, found) = Contributions::<_, Statements, 4, 1024>::open(
        bigger,
        statements(st.into_flash()),
        CAP,
        &mut [0; 1024],
    )
    .unwrap();
    assert_eq!(found, Reopened::default());
    assert!(set.is_empty());
}
