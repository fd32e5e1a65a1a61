//! Where the QEMU firmware's host files are: the command line the host gives through
//! semihosting (`SYS_GET_CMDLINE`), words separated by spaces, the first the program's
//! name, then any of `bundle=PATH` (the bundle it writes), `peer=PATH` (the peer bundle it
//! applies) and `revoke=PATH` (the authority's statement it honours). A path the line does
//! not give is today's default under `target/`, relative to QEMU's working directory:
//!
//! ```text
//! qemu-system-arm ... -semihosting-config \
//!     enable=on,target=native,arg=cairn-mcu,arg=bundle=/tmp/x/out.cbdl,arg=peer=/tmp/x/in.cbdl
//! ```
//!
//! Paths hold no spaces (the host joins the words with spaces). Nothing is allocated: the
//! words are cut out of the line's own buffer, each ended by a NUL as semihosting's OPEN
//! wants.

/// The longest command line read, with its NUL.
pub const LINE_BYTES: usize = 512;

/// The three host paths, each ending with a NUL byte.
pub struct HostPaths<'a> {
    pub bundle: &'a [u8],
    pub peer: &'a [u8],
    pub revoke: &'a [u8],
}

/// Why a command line is refused (the run then fails rather than write elsewhere).
// (The host's tests include this file without defmt: `sim/tests/firmware_paths.rs`.)
#[cfg_attr(target_os = "none", derive(defmt::Format))]
#[derive(Debug, PartialEq, Eq)]
pub enum PathsError {
    /// The host gave no command line, or one of [`LINE_BYTES`] bytes or more.
    Unreadable,
    /// A word that is not `bundle=`, `peer=` or `revoke=` with a path after it.
    UnknownWord,
    /// The same key twice.
    Repeated,
}

/// The paths in `line` (the command line and the NUL after it), defaults for those it
/// does not give.
pub fn parse(line: Option<&mut [u8]>) -> Result<HostPaths<'_>, PathsError> {
    const KEYS: [&[u8]; 3] = [b"bundle=", b"peer=", b"revoke="];
    let line = line.ok_or(PathsError::Unreadable)?;
    if line.last() != Some(&0) {
        return Err(PathsError::Unreadable);
    }
    // Spaces become NULs, so each word is followed by one and is a C string in place.
    for b in line.iter_mut().filter(|b| **b == b' ') {
        *b = 0;
    }
    let line: &[u8] = line;
    let mut paths: [Option<&[u8]>; 3] = [None; 3];
    let mut words = line.split(|&b| b == 0).filter(|w| !w.is_empty());
    let _program = words.next();
    for word in words {
        let start = word.as_ptr() as usize - line.as_ptr() as usize;
        // In range: the line ends with a NUL, after its last word.
        let with_nul = &line[start..=start + word.len()];
        let key = KEYS
            .iter()
            .position(|k| word.starts_with(k) && word.len() > k.len())
            .ok_or(PathsError::UnknownWord)?;
        if paths[key].replace(&with_nul[KEYS[key].len()..]).is_some() {
            return Err(PathsError::Repeated);
        }
    }
    Ok(HostPaths {
        bundle: paths[0].unwrap_or(b"target/bundle.cbdl\0"),
        peer: paths[1].unwrap_or(b"target/peer.cbdl\0"),
        revoke: paths[2].unwrap_or(b"target/revoke.item\0"),
    })
}
