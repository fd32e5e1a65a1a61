//! The Cortex-M firmware (`targets/mcu`, booted in QEMU) as one node of a small fleet of
//! host nodes (real `cairn_node::Node`s assembled the firmware's way, `host_twin.rs`):
//! bundles move only as files in a temporary folder (sneakernet), the firmware reading and
//! writing them through semihosting at the paths its command line gives.
//!
//! 1. Two members on the host (the firmware's peer and a host node) and an outsider each
//!    observe frames and export their own records as a bundle file; the members swap
//!    theirs, and both refuse the outsider's whole.
//! 2. The peer carries a bundle to the firmware: its records, the host node's, and the
//!    outsider's (items a member may carry but no node may keep).
//! 3. The firmware boots, observes, learns (its gate promotes the adapter, which it signs
//!    as a contribution), writes its own bundle (records and contribution), applies the
//!    peer's and judges the merge of the contributions it holds.
//! 4. Both host members import the firmware's bundle and judge the same merge.
//! 5. Converged: the three members hold the same records (the firmware's 8 and the host
//!    members' 8), none from the outsider, and the same merged adapter, bit for bit.
//!
//! Needs `qemu-system-arm` and `defmt-print`; skips (with a message) without them, unless
//! CAIRN_REQUIRE_QEMU=1. Deterministic: fixed keys and frames, no randomness.

#[path = "../../targets/mcu/host_twin.rs"]
mod twin;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cairn_node::{Node, NodeError};
use twin::{
    boot, buffers, bundle_items, carrier_bundle, host_node, observe_and_export, tools_present,
    HostParts, HOST_SEED, OUTSIDER_SEED, PEER_SEED,
};

/// A folder of its own under the system's temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("cairn-qemu-node-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `key=PATH` for the firmware's command line (its words are split at spaces).
fn arg(key: &str, path: &Path) -> String {
    let path = path.to_str().expect("a UTF-8 temporary folder");
    assert!(
        !path.contains(char::is_whitespace),
        "the temporary folder {path} holds a space: the firmware's command line cannot"
    );
    format!("{key}={path}")
}

/// (origin, id) of every record `node` holds.
fn held(node: &Node<'_, HostParts>) -> BTreeSet<(u64, Vec<u8>)> {
    node.memory()
        .metas()
        .iter()
        .map(|m| (m.origin, m.id.to_vec()))
        .collect()
}

/// (origin, id) of every record the firmware logs it holds (`holds ORIGIN [b, ...]`).
fn held_by_firmware(log: &str) -> BTreeSet<(u64, Vec<u8>)> {
    log.lines()
        .filter_map(|l| l.strip_prefix("holds "))
        .map(|rest| {
            let (origin, list) = rest.split_once(' ').expect("holds ORIGIN [ID]");
            let list = list.trim().trim_start_matches('[').trim_end_matches(']');
            let id = list.split(',').map(|b| b.trim().parse().unwrap()).collect();
            (origin.parse().unwrap(), id)
        })
        .collect()
}

/// The merged adapter's digest the firmware logs after applying the peer's bundle
/// (`merged 1 contributions: [b, ...]`: its own, the one it exported).
fn merged_by_firmware(log: &str) -> [u8; 32] {
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("merged 1 contributions: "))
        .unwrap_or_else(|| panic!("no merge of one contribution logged:\n{log}"));
    let bytes: Vec<u8> = line
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|b| b.trim().parse().unwrap())
        .collect();
    bytes.try_into().expect("a 32-byte digest")
}

fn import_file(node: &mut Node<'_, HostParts>, path: &Path) -> Result<u32, NodeError> {
    let bytes = std::fs::read(path).unwrap();
    node.import_bundle(&bytes, 0).map(|r| r.stored)
}

#[test]
fn firmware_in_qemu_converges_with_host_nodes() {
    if !tools_present() {
        eprintln!("skipped: qemu-system-arm or defmt-print not installed");
        return;
    }
    let dir = TempDir::new();
    let (mut peer_buf, mut host_buf, mut outsider_buf) = (buffers(), buffers(), buffers());
    let mut peer = host_node(&mut peer_buf, &PEER_SEED);
    let mut host = host_node(&mut host_buf, &HOST_SEED);
    let mut outsider = host_node(&mut outsider_buf, &OUTSIDER_SEED);
    let outsider_id = outsider.identity().node_id();

    // 1. Observe and export; the members swap bundles and refuse the outsider's. (Four
    // frames each: the firmware reads a peer bundle of up to 2,560 bytes.)
    let files = [
        ("peer.cbdl", observe_and_export(&mut peer, 0..4, 100)),
        ("host.cbdl", observe_and_export(&mut host, 4..8, 200)),
        (
            "outsider.cbdl",
            observe_and_export(&mut outsider, 0..2, 300),
        ),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.file(name), bytes).unwrap();
    }
    assert_eq!(import_file(&mut peer, &dir.file("host.cbdl")), Ok(4));
    assert_eq!(import_file(&mut host, &dir.file("peer.cbdl")), Ok(4));
    for member in [&mut peer, &mut host] {
        let refused = import_file(member, &dir.file("outsider.cbdl"));
        assert!(refused.is_err(), "an outsider's bundle taken: {refused:?}");
    }

    // 2. The peer carries what it has, and the outsider's records, to the firmware.
    let mut carried = Vec::new();
    for (_, bytes) in &files {
        carried.extend(bundle_items(bytes));
    }
    let to_firmware = carrier_bundle(&PEER_SEED, &carried);
    std::fs::write(dir.file("to-firmware.cbdl"), &to_firmware).unwrap();

    // 3. The firmware applies it and writes its own bundle.
    let out = dir.file("firmware.cbdl");
    let log = boot(
        "cairn-mcu",
        &[
            &arg("bundle", &out),
            &arg("peer", &dir.file("to-firmware.cbdl")),
            &arg("revoke", &dir.file("no-revocation")),
        ],
    );
    let applied = format!(
        "apply bundle: {} bytes, stored 8, duplicates 0, refused: not-member 2,",
        to_firmware.len()
    );
    assert!(log.contains(&applied), "no `{applied}` in:\n{log}");
    assert!(
        log.contains("sync bundle: 9 signed items written"),
        "log:\n{log}"
    );

    // 4. The host members import the firmware's bundle: its 8 records and its
    // contribution; each judges the merge.
    assert_eq!(import_file(&mut peer, &out), Ok(9));
    assert_eq!(import_file(&mut host, &out), Ok(9));
    for member in [&mut peer, &mut host] {
        assert!(member.apply().unwrap().is_some(), "a merge to judge");
    }

    // 5. Converged: one set of 16 member records everywhere, none of the outsider's.
    let on_peer = held(&peer);
    assert_eq!(on_peer.len(), 16);
    assert_eq!(held(&host), on_peer, "the host members differ");
    assert_eq!(
        held_by_firmware(&log),
        on_peer,
        "the firmware holds other records than the host members:\n{log}"
    );
    assert!(on_peer.iter().all(|(origin, _)| *origin != outsider_id));
    let merged = merged_by_firmware(&log);
    assert_eq!(peer.merged_digest(), Some(merged), "log:\n{log}");
    assert_eq!(host.merged_digest(), Some(merged), "log:\n{log}");
    println!(
        "{}",
        log.lines()
            .filter(|l| !l.starts_with("out") && !l.starts_with("holds"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
