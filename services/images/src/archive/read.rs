//! One streaming pass over an image archive (optionally gzip/zstd-compressed): the small
//! JSON documents are kept in memory, every other regular file goes straight into the
//! content store (blobs under `blobs/sha256/` verified against their names), links are
//! remembered (legacy docker-archives link duplicate layers).

use std::collections::HashMap;
use std::io::Read;

use berth_common::Namespace;
use sha2::{Digest as _, Sha256};

use crate::content::store::SMALL_BLOB_LIMIT;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::state::State;

const CHUNK: usize = 1024 * 1024;

/// What one pass over the tar found.
#[derive(Default)]
pub struct Contents {
    /// Small JSON documents by path.
    pub documents: HashMap<String, Vec<u8>>,
    /// Every other regular file, stored as a blob: path -> (digest, size).
    pub blobs: HashMap<String, (Digest, u64)>,
    /// Symlinks and hard links: path -> target path.
    pub links: HashMap<String, String>,
}

impl Contents {
    pub fn blob(&self, path: &str) -> Option<&(Digest, u64)> {
        let mut path = normalize(path);
        for _ in 0..16 {
            if let Some(blob) = self.blobs.get(&path) {
                return Some(blob);
            }
            path = self.links.get(&path)?.clone();
        }
        None
    }
}

/// "./a/b" and "/a/b" -> "a/b".
pub fn normalize(path: &str) -> String {
    path.trim_start_matches("./").trim_start_matches('/').to_string()
}

/// A link target relative to the link's own directory, resolved to an archive path.
fn resolve_link(link: &str, target: &str) -> String {
    if target.starts_with('/') {
        return normalize(target);
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

fn is_document(path: &str) -> bool {
    !path.starts_with("blobs/")
        && (path.ends_with(".json") || matches!(path, "repositories" | "oci-layout" | "index.json" | "manifest.json"))
}

/// Per-layer metadata of the legacy format: nothing needs it.
fn is_legacy_metadata(path: &str) -> bool {
    path.ends_with("/json") || path.ends_with("/VERSION")
}

/// The content store from a blocking thread.
pub struct BlobWriter<'a> {
    pub handle: &'a tokio::runtime::Handle,
    pub state: &'a State,
    pub namespace: &'a Namespace,
    pub lease: &'a str,
}

impl BlobWriter<'_> {
    fn store(&self, reader: &mut dyn Read, expected: Option<Digest>, size: u64) -> Result<Digest> {
        if let Some(digest) = &expected
            && self.state.content.exists(digest)
        {
            self.protect(digest)?;
            return Ok(digest.clone());
        }
        let ingest = format!("load-{}", crate::content::store::unique_suffix());
        let result = self.write(&ingest, reader, expected, size);
        if result.is_err() {
            let _ = self.state.content.abort(&ingest);
        }
        let digest = result?;
        self.protect(&digest)?;
        Ok(digest)
    }

    fn write(&self, ingest: &str, reader: &mut dyn Read, expected: Option<Digest>, size: u64) -> Result<Digest> {
        let mut writer = self.handle.block_on(self.state.content.writer(ingest, expected.clone(), Some(size)))?;
        self.handle.block_on(writer.truncate(0))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let n = reader.read(&mut buffer).map_err(|e| Error::io("reading the archive", e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            self.handle.block_on(writer.write(&buffer[..n]))?;
        }
        let digest = Digest::from_hasher(hasher);
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(Error::DigestMismatch {
                what: format!("archive blob {expected}"),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        self.handle.block_on(writer.commit(Some(size), &digest))
    }

    fn protect(&self, digest: &Digest) -> Result<()> {
        self.state.db.update_lease(self.namespace, self.lease, |lease| {
            lease.content.insert(digest.to_string());
        })
    }
}

/// One pass over the (possibly compressed) tar.
pub fn read_archive(writer: &BlobWriter<'_>, input: Box<dyn Read + Send>) -> Result<Contents> {
    let input = crate::layer::decompressed(input)?;
    let mut archive = tar::Archive::new(input);
    let mut contents = Contents::default();
    let bad = |e| Error::InvalidArgument(format!("not a readable tar archive: {e}"));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = normalize(&entry.path().map_err(bad)?.to_string_lossy());
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().map_err(bad)? {
                let target = target.to_string_lossy().into_owned();
                let resolved = if kind.is_hard_link() { normalize(&target) } else { resolve_link(&path, &target) };
                contents.links.insert(path, resolved);
            }
            continue;
        }
        if !kind.is_file() || path.is_empty() || is_legacy_metadata(&path) {
            continue;
        }
        let size = entry.size();
        if is_document(&path) && size <= SMALL_BLOB_LIMIT {
            let mut data = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut data).map_err(|e| Error::io(format!("reading {path}"), e))?;
            contents.documents.insert(path, data);
            continue;
        }
        let expected = match path.strip_prefix("blobs/") {
            Some(rest) => match rest.split_once('/') {
                Some(("sha256", hex)) => Some(Digest::parse(&format!("sha256:{hex}"))?),
                _ => return Err(Error::Unsupported(format!("{path}: only sha256 blobs are supported"))),
            },
            None => None,
        };
        let digest = writer.store(&mut entry, expected, size)?;
        contents.blobs.insert(path, (digest, size));
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_links_resolve_inside_the_archive() {
        assert_eq!(resolve_link("abc/layer.tar", "../def/layer.tar"), "def/layer.tar");
        assert_eq!(resolve_link("abc/layer.tar", "/def/layer.tar"), "def/layer.tar");
        assert_eq!(normalize("./manifest.json"), "manifest.json");
        let mut contents = Contents::default();
        contents.blobs.insert("def/layer.tar".into(), (Digest::of(b"x"), 1));
        contents.links.insert("abc/layer.tar".into(), "def/layer.tar".into());
        assert_eq!(contents.blob("./abc/layer.tar").unwrap().1, 1);
        assert!(is_document("manifest.json") && is_document("abc.json") && !is_document("blobs/sha256/aa"));
    }
}
