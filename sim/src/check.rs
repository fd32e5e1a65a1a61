//! The invariants every run must end with (after the heal phase), besides those checked as
//! the run goes (`world.rs`: a restarted node lost no acknowledged record; no honest node
//! promoted a merge holding a byzantine contribution; outsiders' bundles refused; RAM and
//! flash within budget):
//!
//! - every honest node holds the same memory set, and it holds every record any honest
//!   node acknowledged (a byzantine member may keep its own records to itself);
//! - every honest node holds the same item set, and it holds no record a member did not
//!   create and no item whose origin is not a member;
//! - every honest node judged the same set of contributions to the same merged adapter
//!   (bit for bit: merges sum in id order).

use std::collections::BTreeSet;

use cairn_sync::item::Kind;
use cairn_sync::Store;

use crate::world::{Id, World};

fn ids_of(v: &BTreeSet<Id>) -> String {
    let first: Vec<String> = v
        .iter()
        .take(3)
        .map(|id| id.iter().take(4).map(|b| format!("{b:02x}")).collect())
        .collect();
    format!("{} ({}…)", v.len(), first.join(", "))
}

/// The first honest node's sets, to compare the others with: its index, memory ids, item
/// ids, merged adapter digest.
type Reference = (usize, BTreeSet<Id>, BTreeSet<Id>, Option<[u8; 32]>);

pub(crate) fn final_checks(w: &mut World<'_>) {
    let round = w.stats.rounds;
    // Records an honest node acknowledged (a byzantine member may keep its own to itself).
    let acked: BTreeSet<Id> = w
        .nodes
        .iter()
        .filter(|n| !n.byzantine)
        .flat_map(|n| n.acked.iter().copied())
        .collect();
    let genuine = w.genuine.clone();
    let members = w.members.clone();
    let mut reference: Option<Reference> = None;
    let mut problems = Vec::new();
    for n in w.nodes.iter_mut().filter(|n| !n.byzantine) {
        let i = n.index;
        let Some(node) = n.up() else {
            problems.push(format!("node {i} is down after the heal phase"));
            continue;
        };
        let memory: BTreeSet<Id> = node.memory().metas().iter().map(|m| m.id).collect();
        let items: BTreeSet<Id> = node.items().ids().iter().copied().collect();
        let lost: BTreeSet<Id> = acked.difference(&memory).copied().collect();
        if !lost.is_empty() {
            problems.push(format!(
                "node {i} lacks acknowledged records: {}",
                ids_of(&lost)
            ));
        }
        let forged: BTreeSet<Id> = memory.difference(&genuine).copied().collect();
        if !forged.is_empty() {
            problems.push(format!(
                "node {i} stored records no member created: {}",
                ids_of(&forged)
            ));
        }
        let mut head = [0u8; 36];
        for id in &items {
            if node.items().read(id, 0, &mut head) < 36 {
                continue;
            }
            let mut origin = [0u8; 32];
            origin.copy_from_slice(&head[4..36]);
            if !members.contains(&origin) {
                problems.push(format!("node {i} holds an item from a non-member"));
            }
            if head[2] == Kind::Record as u8 && !genuine.contains(id) {
                problems.push(format!("node {i} holds a forged record item"));
            }
        }
        let merged = node.merged_digest();
        match &reference {
            None => reference = Some((i, memory, items, merged)),
            Some((r, m, it, mg)) => {
                if *m != memory {
                    problems.push(format!(
                        "memory sets differ: node {r} holds {}, node {i} holds {}",
                        m.len(),
                        memory.len()
                    ));
                }
                if *it != items {
                    problems.push(format!(
                        "item sets differ: node {r} holds {}, node {i} holds {}",
                        it.len(),
                        items.len()
                    ));
                }
                if *mg != merged {
                    problems.push(format!(
                        "merged adapters differ between node {r} and node {i}"
                    ));
                }
            }
        }
    }
    problems.dedup();
    for p in problems.into_iter().take(10) {
        w.violations.push(format!("round {round} (end): {p}"));
    }
}
