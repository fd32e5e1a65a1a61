//! The field story with a fixed seed (`CAIRN_SEED` picks another): every device must go
//! from not knowing the new digit to recognizing it, through the gate and through sync;
//! the forgeries must be refused.

use std::path::Path;

use super::*;

fn zoo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/zoo")
}

fn seed() -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

#[test]
fn every_device_recognizes_the_new_digit_after_sync_and_forgeries_are_refused() {
    let s = Settings {
        seed: seed(),
        ..Settings::default()
    };
    let seed = s.seed;
    let r = run(&zoo(), &s).unwrap_or_else(|x| panic!("CAIRN_SEED={seed}: {x:?}"));
    print(&r);
    let ctx = format!("CAIRN_SEED={seed}");
    assert!(r.learned.promoted(), "{ctx}: A's gate: {:?}", r.learned);
    for (who, o) in [("B", &r.merge_b), ("C", &r.merge_c)] {
        assert!(
            o.is_some_and(|o| o.promoted()),
            "{ctx}: {who}'s gate on the merge: {o:?}"
        );
    }
    for f in &r.nodes {
        assert!(
            f.before.new <= 0.2,
            "{ctx}: {} knew the digit before: {:?}",
            f.name,
            f.before
        );
        assert!(f.after.new >= 0.8, "{ctx}: {} after: {:?}", f.name, f.after);
        assert!(
            f.after.old >= f.before.old - 0.05,
            "{ctx}: {} forgot digits 0-4: {:?} -> {:?}",
            f.name,
            f.before,
            f.after
        );
    }
    assert!(
        r.link.complete,
        "{ctx}: the radio never completed a session"
    );
    let c = &r.carry;
    let refused = item_refusals(&c.tampered);
    assert_eq!(refused[Reject::BadSignature as usize], 1, "{ctx}: {c:?}");
    assert_eq!(refused[Reject::Forged as usize], 1, "{ctx}: {c:?}");
    assert!(
        !c.tampered.complete && !c.tampered_changed_adapter,
        "{ctx}: {c:?}"
    );
    assert_eq!(c.outsider, Some(Reject::NotMember), "{ctx}");
    assert!(c.genuine.complete && c.genuine.stored == 1, "{ctx}: {c:?}");
    assert_eq!(r.forgeries_refused(), 3, "{ctx}");
    assert!(r.same_merge, "{ctx}: B and C merged the same contributions");
    // A and B hold each other's records; C holds both and its own, and not the forged one.
    let observed = 5 * s.old_per_class;
    assert_eq!(r.nodes[0].records, 2 * observed + s.shots, "{ctx}");
    assert_eq!(r.nodes[1].records, r.nodes[0].records, "{ctx}");
    assert_eq!(r.nodes[2].records, r.nodes[0].records + observed, "{ctx}");
}
