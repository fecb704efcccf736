//! Image references parsed and normalized like Docker does (`busybox` ->
//! `docker.io/library/busybox:latest`), on top of `oci_spec`'s distribution `Reference`
//! (a port of Docker's own normalization code).

use oci_client::Reference;

use crate::digest::Digest;
use crate::error::{Error, Result};

pub const DOCKER_HUB: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    /// Repository path inside the registry ("library/busybox").
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef> {
        let text = text.trim();
        // Docker's message for "Busybox": the repository path must be lowercase (a registry
        // host may have capitals). Checked with a digest too: "Foo/bar@sha256:..." would
        // otherwise be stored as "docker.io/Foo/bar@...", a name that does not parse again.
        if repository_path(text).chars().any(|c| c.is_ascii_uppercase()) {
            return Err(Error::InvalidArgument(format!(
                "invalid reference format: repository name ({text}) must be lowercase"
            )));
        }
        let parsed: Reference =
            text.parse().map_err(|e| Error::InvalidArgument(format!("invalid reference format {text:?}: {e}")))?;
        let digest = parsed.digest().map(Digest::parse).transpose()?;
        Ok(ImageRef {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
            // A digest pins the content: like containerd, the tag is then only informative.
            tag: if digest.is_some() { None } else { parsed.tag().map(str::to_string) },
            digest,
        })
    }

    /// "registry/repository", e.g. "docker.io/library/busybox".
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The full normalized name an image record is stored under:
    /// "docker.io/library/busybox:latest" or "host:5000/app@sha256:...".
    pub fn name(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => format!("{}@{digest}", self.repository_name()),
            (None, Some(tag)) => format!("{}:{tag}", self.repository_name()),
            (None, None) => format!("{}:latest", self.repository_name()),
        }
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn to_oci(&self, registry: &str) -> Reference {
        match &self.digest {
            Some(digest) => Reference::with_digest(registry.to_string(), self.repository.clone(), digest.to_string()),
            None => Reference::with_tag(
                registry.to_string(),
                self.repository.clone(),
                self.tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

/// The repository path of a reference as typed: after the registry host, if the first
/// component is one (it has a '.' or ':' or is "localhost", the rule Docker and
/// `oci_spec` split by), and before any tag or digest.
fn repository_path(text: &str) -> &str {
    let rest = match text.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => text,
    };
    rest.split([':', '@']).next().unwrap_or(rest)
}

/// The short form Docker shows for a full name: "busybox" for
/// "docker.io/library/busybox", "user/app" for "docker.io/user/app"; other registries
/// keep their host.
pub fn familiar(repository_name: &str) -> String {
    match repository_name.strip_prefix("docker.io/") {
        Some(rest) => rest.strip_prefix("library/").filter(|r| !r.contains('/')).unwrap_or(rest).to_string(),
        None => repository_name.to_string(),
    }
}

/// Splits a stored record name into (repository name, tag, digest).
pub fn split_name(name: &str) -> (String, Option<String>, Option<String>) {
    if let Some((repository, digest)) = name.split_once('@') {
        return (repository.to_string(), None, Some(digest.to_string()));
    }
    match name.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository.to_string(), Some(tag.to_string()), None),
        _ => (name.to_string(), None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> String {
        ImageRef::parse(text).unwrap().name()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(name("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(name("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(name("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(name("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(name("index.docker.io/library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(name("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(name("127.0.0.1:5000/busybox"), "127.0.0.1:5000/busybox:latest");
        assert_eq!(name("localhost/app:dev"), "localhost/app:dev");
        assert_eq!(name("localhost:5000/a/b/c:t"), "localhost:5000/a/b/c:t");
        assert_eq!(name("quay.io/org/img:1"), "quay.io/org/img:1");
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(name(&format!("busybox@{digest}")), format!("docker.io/library/busybox@{digest}"));
        assert_eq!(name(&format!("127.0.0.1:5000/x:1@{digest}")), format!("127.0.0.1:5000/x@{digest}"));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in ["", "Busybox", "busybox:", "a b", "busybox@sha256:abc", "UPPER/case:tag", "-x"] {
            let err = ImageRef::parse(bad).unwrap_err();
            assert!(err.to_string().contains("invalid reference format"), "{bad}: {err}");
        }
    }

    #[test]
    fn uppercase_is_refused_in_the_repository_only() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        // Found by the image_ref fuzz target: these parsed, but their stored name
        // ("docker.io/Foo/bar@...") or repository ("quay.ioPorg/imag") did not parse again.
        for bad in [format!("Foo/bar@{digest}"), format!("localhost/Foo@{digest}"), format!("LOCALHOST/x@{digest}")] {
            let err = ImageRef::parse(&bad).unwrap_err();
            assert!(err.to_string().contains("must be lowercase"), "{bad}: {err}");
        }
        let image = ImageRef::parse(&format!("quay.ioPorg/imag@{digest}")).unwrap();
        assert_eq!((image.registry.as_str(), image.repository.as_str()), ("quay.ioPorg", "imag"));
        assert_eq!(name(&image.repository_name()), "quay.ioPorg/imag:latest");
        // As in Docker, the registry host keeps its capitals, with a tag as with a digest.
        assert_eq!(name("Quay.io/org/img:V1"), "Quay.io/org/img:V1");
        assert_eq!(name("Localhost:5000/app"), "Localhost:5000/app:latest");
        assert_eq!(name("busybox:Latest"), "docker.io/library/busybox:Latest");
    }

    /// The `image_ref` fuzz target's checks over its corpus (seeds and inputs it found).
    mod fuzz_corpus {
        use super::super::*;

        include!("../../../fuzz/checks/image_ref.rs");
        include!("../../../fuzz/checks/corpus.rs");

        #[test]
        fn corpus_holds() {
            check_corpus("image_ref", check);
        }
    }

    #[test]
    fn familiar_names_match_docker_output() {
        assert_eq!(familiar("docker.io/library/busybox"), "busybox");
        assert_eq!(familiar("docker.io/user/app"), "user/app");
        assert_eq!(familiar("127.0.0.1:5000/busybox"), "127.0.0.1:5000/busybox");
        assert_eq!(
            split_name("127.0.0.1:5000/busybox:latest"),
            ("127.0.0.1:5000/busybox".into(), Some("latest".into()), None)
        );
        assert_eq!(split_name("127.0.0.1:5000/busybox"), ("127.0.0.1:5000/busybox".into(), None, None));
        let (repo, tag, digest) = split_name("docker.io/library/x@sha256:00");
        assert_eq!((repo.as_str(), tag, digest.as_deref()), ("docker.io/library/x", None, Some("sha256:00")));
    }
}
