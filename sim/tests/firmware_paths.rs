//! The QEMU firmware's command line (`targets/mcu/src/host_paths.rs`, included here: it is
//! plain `core` code) gives the paths it reads and writes, today's defaults otherwise, and
//! refuses a line it does not understand rather than write somewhere else.

#[path = "../../targets/mcu/src/host_paths.rs"]
mod host_paths;

use host_paths::{parse, PathsError, LINE_BYTES};

/// `text` and a NUL, as `HostFile::command_line` hands it over.
fn line(text: &str) -> Vec<u8> {
    let mut v = text.as_bytes().to_vec();
    v.push(0);
    v
}

fn paths(text: &str) -> Result<[Vec<u8>; 3], PathsError> {
    let mut l = line(text);
    parse(Some(&mut l)).map(|p| [p.bundle.to_vec(), p.peer.to_vec(), p.revoke.to_vec()])
}

#[test]
fn paths_from_the_command_line_or_the_defaults() {
    let defaults = [
        b"target/bundle.cbdl\0".to_vec(),
        b"target/peer.cbdl\0".to_vec(),
        b"target/revoke.item\0".to_vec(),
    ];
    // QEMU without `arg=`: the kernel's path alone (the program's name is never a path).
    assert_eq!(
        paths("target/thumbv7em-none-eabihf/release/cairn-mcu"),
        Ok(defaults.clone())
    );
    assert_eq!(paths(""), Ok(defaults.clone()));
    assert_eq!(
        paths("cairn-mcu peer=/tmp/a/p.cbdl  bundle=/tmp/a/out.cbdl"),
        Ok([
            b"/tmp/a/out.cbdl\0".to_vec(),
            b"/tmp/a/p.cbdl\0".to_vec(),
            defaults[2].clone(),
        ])
    );
    assert_eq!(
        paths("cairn-mcu revoke=r=1,2"),
        Ok([
            defaults[0].clone(),
            defaults[1].clone(),
            b"r=1,2\0".to_vec()
        ])
    );
}

#[test]
fn a_line_it_does_not_understand_is_refused() {
    assert_eq!(
        paths("cairn-mcu bundel=/tmp/x").err(),
        Some(PathsError::UnknownWord)
    );
    assert_eq!(
        paths("cairn-mcu bundle=").err(),
        Some(PathsError::UnknownWord)
    );
    assert_eq!(
        paths("cairn-mcu peer=/a peer=/b").err(),
        Some(PathsError::Repeated)
    );
    assert_eq!(parse(None).err(), Some(PathsError::Unreadable));
    // Without the NUL after it (a line that filled the buffer).
    let mut full = vec![b'x'; LINE_BYTES];
    assert_eq!(parse(Some(&mut full)).err(), Some(PathsError::Unreadable));
}
