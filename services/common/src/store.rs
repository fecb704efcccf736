//! Opening a service's own sled database. sled does not make writes durable by itself:
//! services flush before acknowledging a change that must survive a crash.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot open database {path}: {source}")]
pub struct OpenError {
    path: PathBuf,
    source: sled::Error,
}

impl OpenError {
    pub fn new(path: PathBuf, source: sled::Error) -> OpenError {
        OpenError { path, source }
    }
}

/// Opens (creating if needed) `<root>/<name>`, e.g. `images.db`.
pub fn open_db(root: &Path, name: &str) -> Result<sled::Db, OpenError> {
    let path = root.join(name);
    sled::Config::new()
        .path(&path)
        .mode(sled::Mode::LowSpace)
        .cache_capacity(16 * 1024 * 1024)
        .open()
        .map_err(|source| OpenError { path, source })
}

/// Key of `name` inside `namespace`: `<namespace>/<name>`. Namespaces cannot contain '/'.
pub fn ns_key(namespace: &crate::Namespace, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(namespace.as_str().len() + 1 + name.len());
    key.extend_from_slice(namespace.as_str().as_bytes());
    key.push(b'/');
    key.extend_from_slice(name.as_bytes());
    key
}

/// Prefix of every key of `namespace`.
pub fn ns_prefix(namespace: &crate::Namespace) -> Vec<u8> {
    ns_key(namespace, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(dir.path(), "t.db").unwrap();
            db.insert(b"k", b"v").unwrap();
            db.flush().unwrap();
        }
        let db = open_db(dir.path(), "t.db").unwrap();
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn namespace_keys_do_not_collide() {
        let a = crate::Namespace::new("a").unwrap();
        let ab = crate::Namespace::new("ab").unwrap();
        assert!(!ns_key(&ab, "x").starts_with(&ns_prefix(&a)));
    }
}
