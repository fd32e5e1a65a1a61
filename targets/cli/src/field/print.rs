//! Telling the field story: the figures of a [`FieldReport`], one step per line.

use cairn_node::Outcome;
use cairn_sync::Reject;

use super::{item_refusals, FieldReport, BANDWIDTH_BPS, MTU, WINDOW_MS};
use crate::learn::HyperArgs;

fn pct(v: f32) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// 1234567 → "1,234,567".
fn thousands(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// "old 100.0% -> 97.7% (44 held out), new 0.0% -> 100.0% (2): promoted"
fn verdict(o: &Outcome) -> String {
    let (before, after, what) = match o {
        Outcome::Promoted { before, after, .. } => (before, after, "promoted".to_string()),
        Outcome::Rejected {
            before,
            after,
            reason,
            ..
        } => (before, after, format!("rejected ({reason:?})")),
    };
    format!(
        "old classes {} -> {} ({} held out), new {} -> {} ({} held out): {what}",
        pct(before.old_acc),
        pct(after.old_acc),
        after.n_old,
        pct(before.new_acc),
        pct(after.new_acc),
        after.n_new
    )
}

/// Item refusals of an import, named.
fn refusals(r: &[u32; Reject::COUNT]) -> String {
    let names = [
        (Reject::BadSignature, "bad signature"),
        (Reject::Forged, "forged origin"),
        (Reject::NotMember, "not a member"),
        (Reject::Malformed, "malformed"),
        (Reject::TooLarge, "too large"),
    ];
    let parts: Vec<String> = names
        .iter()
        .filter(|(k, _)| r[*k as usize] > 0)
        .map(|(k, n)| format!("{} {n}", r[*k as usize]))
        .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

fn print_radio(r: &FieldReport) {
    let (s, l) = (&r.settings, &r.link);
    println!(
        "   A <-> B over the radio ({:.0}% loss, {:.0}% corrupted, {:.0}% duplicated each way; {MTU}-byte frames, {} kbit/s): {} contacts of {} s, {}",
        100.0 * s.loss,
        100.0 * s.corrupt,
        100.0 * s.duplicate,
        BANDWIDTH_BPS / 1000,
        l.contacts,
        WINDOW_MS / 1000,
        if l.complete {
            "the last one complete"
        } else {
            "none complete"
        },
    );
    println!(
        "     {} items moved; {} bytes on the air in {} frames ({} bytes in data frames sent the first time)",
        l.items,
        thousands(l.bytes),
        thousands(l.frames),
        thousands(l.first_sends)
    );
    let refused = |k: Reject| thousands(l.rejected[k as usize]);
    println!(
        "     the link lost {} frames and damaged {}; the sessions refused {} failing authentication, {} out of order, {} seen twice; {} retransmission timeouts (go-back-N: each resends the window)",
        thousands(l.lost),
        thousands(l.corrupted),
        refused(Reject::AuthFailed),
        refused(Reject::OutOfOrder),
        refused(Reject::Replay),
        thousands(l.retransmits)
    );
}

fn print_carry(r: &FieldReport) {
    let c = &r.carry;
    println!(
        "   B -> C by sneakernet (C never meets A or B): B writes a bundle file, {} items in {} bytes; C is handed, in turn:",
        c.items,
        thousands(c.bundle_bytes as u64)
    );
    println!(
        "     a tampered copy (a bit flipped in A's contribution, a record \"by A\" signed by an outsider spliced in): {} stored, refused {}; the bundle's own signature {}; C's adapter {}",
        c.tampered.stored,
        refusals(&item_refusals(&c.tampered)),
        if c.tampered.complete { "verifies" } else { "fails" },
        if c.tampered_changed_adapter {
            "CHANGED"
        } else {
            "unchanged"
        }
    );
    println!(
        "     an outsider's own bundle: {}",
        match c.outsider {
            Some(Reject::NotMember) => "refused whole (its signer is not in the fleet)".to_string(),
            Some(reason) => format!("refused whole ({reason:?})"),
            None => "TAKEN".into(),
        }
    );
    println!(
        "     the genuine file: {} stored, {} already held; the bundle's signature {}",
        c.genuine.stored,
        c.genuine.duplicates,
        if c.genuine.complete {
            "verifies"
        } else {
            "fails"
        }
    );
}

/// Tell the story.
pub fn print(r: &FieldReport) {
    let s = &r.settings;
    let n = s.new_class;
    println!(
        "== the field: three devices, a digit the base model never learned ({n}), a lossy radio and a carried bundle (seed {})",
        s.seed
    );
    println!(
        "   A, B and C run the base model (digits 0-4, int8) and keep its {}-wide features; each observes {} digits 0-4; A is also shown {} labelled {n}s",
        r.features,
        5 * s.old_per_class,
        s.shots
    );
    println!(
        "   A learns (LoRA + head, {} steps in {:.0} ms, arena {} B); A's gate: {}",
        HyperArgs::default().steps,
        r.train_ms,
        r.arena_bytes,
        verdict(&r.learned)
    );
    if r.learned.promoted() {
        println!(
            "   A offers its adapter to the fleet as a signed contribution ({} B)",
            thousands(r.contribution_bytes as u64)
        );
    }
    print_radio(r);
    let judged = |who: &str, o: &Option<Outcome>| match o {
        Some(o) => println!(
            "   {who} judges the merged adapter on its own memory: {}",
            verdict(o)
        ),
        None => println!("   {who} has no contribution to judge"),
    };
    judged("B", &r.merge_b);
    print_carry(r);
    judged("C", &r.merge_c);
    println!(
        "   {:<7} {:<28} {:<26} records",
        "device",
        "digits 0-4: before -> after",
        format!("digit {n}: before -> after"),
    );
    for f in &r.nodes {
        println!(
            "   {:<7} {:<28} {:<26} {}",
            f.name,
            format!("{} -> {}", pct(f.before.old), pct(f.after.old)),
            format!("{} -> {}", pct(f.before.new), pct(f.after.new)),
            f.records
        );
    }
    println!(
        "   test split: {} images of 0-4, {} of {n}; B and C hold {}",
        r.test_old,
        r.test_new,
        if r.same_merge {
            "the same merged adapter, bit for bit"
        } else {
            "DIFFERENT merged adapters"
        },
    );
    println!(
        "   forgeries refused: {}; the field story took {:.2} s ({:.0} s of simulated radio time)",
        r.forgeries_refused(),
        r.wall_s,
        r.link.radio_ms as f64 / 1e3
    );
}
