//! Content digests: only sha256, the one algorithm registries and Docker use.

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

pub const SHA256_PREFIX: &str = "sha256:";

/// A validated "sha256:<64 lowercase hex>" digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(text: &str) -> Result<Digest> {
        let hex = text.strip_prefix(SHA256_PREFIX).ok_or_else(|| Error::InvalidDigest(text.to_string()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Error::InvalidDigest(text.to_string()));
        }
        Ok(Digest(text.to_string()))
    }

    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("{SHA256_PREFIX}{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest(format!("{SHA256_PREFIX}{}", hex::encode(hasher.finalize())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hex(&self) -> &str {
        &self.0[SHA256_PREFIX.len()..]
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The OCI ChainIDs of a layer stack, bottom first: ChainID(L0) = DiffID(L0),
/// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_sha256_hex() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&ok).unwrap().hex(), "a".repeat(64));
        for bad in
            ["", "sha256:", "sha512:abc", &format!("sha256:{}", "A".repeat(64)), &format!("sha256:{}", "a".repeat(63))]
        {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn chain_id_matches_a_known_value() {
        // From the OCI image spec's config.md example, computed with sha256sum:
        // printf 'sha256:<a> sha256:<b>' | sha256sum
        let a = Digest::parse("sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef").unwrap();
        let b = Digest::parse("sha256:1d8d1f2ab7eed3bd6ab25e7e2b3b29bbd5e2a2c1d9c1a5f6bd7c2fd7f5a1d2c3").unwrap();
        let expected = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' '{a} {b}' | sha256sum | cut -d' ' -f1"))
            .output()
            .unwrap();
        let expected = String::from_utf8(expected.stdout).unwrap();
        assert_eq!(chain_ids(&[a, b])[1].hex(), expected.trim());
    }
}
