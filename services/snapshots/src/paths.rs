//! Path names inside layer tars: normalising entry names, recognising whiteouts, and
//! splitting symlink targets. Pure functions, so the rules are unit-tested without root.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Prefix of an OCI whiteout entry (`.wh.NAME` deletes NAME).
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Marks its directory opaque: lower layers' contents of it are hidden.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("entry {0:?} has a '..' component")]
    ParentComponent(String),
    #[error("entry name is empty")]
    Empty,
    #[error("entry {0:?} contains a NUL byte")]
    Nul(String),
}

/// A tar entry name, relative to the snapshot root, as a list of plain components.
/// Leading `/` and `./` are dropped (absolute names are confined to the root, as `tar`
/// does); `..` anywhere is refused, since no honest layer needs it.
pub fn entry_components(raw: &[u8]) -> Result<Vec<OsString>, PathError> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.contains(&0) {
        return Err(PathError::Nul(shown()));
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => return Err(PathError::ParentComponent(shown())),
            other => out.push(OsStr::from_bytes(other).to_os_string()),
        }
    }
    Ok(out)
}

/// What an entry's last component means.
#[derive(Debug, PartialEq, Eq)]
pub enum EntryKind<'a> {
    Plain,
    /// `.wh.NAME`: delete NAME in this directory.
    Whiteout(&'a OsStr),
    /// `.wh..wh..opq`: this directory hides lower layers' contents.
    Opaque,
}

pub fn classify(name: &OsStr) -> EntryKind<'_> {
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER.as_bytes() {
        EntryKind::Opaque
    } else if let Some(rest) = bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes())
        && !rest.is_empty()
        && rest != b"."
        && rest != b".."
    {
        EntryKind::Whiteout(OsStr::from_bytes(rest))
    } else {
        EntryKind::Plain
    }
}

/// A symlink target split for resolution inside the root: whether it restarts at the root,
/// and its components (`..` kept: the resolver clamps it at the root).
pub fn link_target_components(target: &OsStr) -> (bool, Vec<OsString>) {
    let bytes = target.as_bytes();
    let absolute = bytes.first() == Some(&b'/');
    let parts = bytes
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .map(|p| OsStr::from_bytes(p).to_os_string())
        .collect();
    (absolute, parts)
}

/// `a/b/c` from components, for messages and tar names.
pub fn join(components: &[OsString]) -> OsString {
    let mut out = OsString::new();
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            out.push("/");
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(raw: &str) -> Vec<String> {
        entry_components(raw.as_bytes()).unwrap().into_iter().map(|c| c.into_string().unwrap()).collect()
    }

    #[test]
    fn normalises_leading_slashes_and_dots() {
        assert_eq!(comps("./etc/passwd"), ["etc", "passwd"]);
        assert_eq!(comps("/etc//passwd/"), ["etc", "passwd"]);
        assert_eq!(comps("a/./b"), ["a", "b"]);
        assert!(comps("./").is_empty());
    }

    #[test]
    fn refuses_parent_components_anywhere() {
        for raw in ["../x", "a/../../x", "a/..", "/..", ".."] {
            assert!(matches!(entry_components(raw.as_bytes()), Err(PathError::ParentComponent(_))), "{raw}");
        }
        // A name that merely contains dots is fine.
        assert_eq!(comps("a/..b/c.."), ["a", "..b", "c.."]);
        assert!(matches!(entry_components(b"a\0b"), Err(PathError::Nul(_))));
    }

    #[test]
    fn recognises_whiteouts() {
        assert_eq!(classify(OsStr::new(".wh.foo")), EntryKind::Whiteout(OsStr::new("foo")));
        assert_eq!(classify(OsStr::new(".wh..wh..opq")), EntryKind::Opaque);
        assert_eq!(classify(OsStr::new(".wh.")), EntryKind::Plain);
        assert_eq!(classify(OsStr::new(".wh..")), EntryKind::Plain);
        assert_eq!(classify(OsStr::new(".wh...")), EntryKind::Plain);
        assert_eq!(classify(OsStr::new("foo.wh.bar")), EntryKind::Plain);
        assert_eq!(classify(OsStr::new(".wh..wh.x")), EntryKind::Whiteout(OsStr::new(".wh.x")));
    }

    #[test]
    fn splits_link_targets() {
        let (abs, parts) = link_target_components(OsStr::new("/etc/../shadow"));
        assert!(abs);
        assert_eq!(parts, ["etc", "..", "shadow"]);
        let (abs, parts) = link_target_components(OsStr::new("../../x/./y"));
        assert!(!abs);
        assert_eq!(parts, ["..", "..", "x", "y"]);
    }

    #[test]
    fn joins_for_messages() {
        let parts: Vec<OsString> = vec!["a".into(), "b".into()];
        assert_eq!(join(&parts), "a/b");
    }
}
