//! Where blobs are known to exist remotely, kept as content labels per namespace the way
//! containerd does (`<prefix><registry>` = comma-separated repositories): a push to a
//! repository of the same registry can then mount a blob instead of uploading it.

use berth_common::Namespace;

use crate::error::Result;
use crate::state::State;

const PREFIX: &str = "berth.io/distribution.source.";

/// Records that `digests` exist in `registry/repository`.
pub fn record(
    state: &State,
    namespace: &Namespace,
    digests: &[String],
    registry: &str,
    repository: &str,
) -> Result<()> {
    let key = format!("{PREFIX}{registry}");
    for digest in digests {
        let mut labels = state.db.labels(namespace, digest)?.labels;
        let mut repositories: Vec<String> =
            labels.get(&key).map(|v| v.split(',').map(str::to_string).collect()).unwrap_or_default();
        if repositories.iter().any(|r| r == repository) {
            continue;
        }
        repositories.push(repository.to_string());
        labels.insert(key.clone(), repositories.join(","));
        state.db.set_labels(namespace, digest, labels)?;
    }
    Ok(())
}

/// Repositories of `registry` known to hold `digest`.
pub fn repositories(state: &State, namespace: &Namespace, digest: &str, registry: &str) -> Vec<String> {
    let key = format!("{PREFIX}{registry}");
    state
        .db
        .labels(namespace, digest)
        .ok()
        .and_then(|labels| labels.labels.get(&key).cloned())
        .map(|value| value.split(',').filter(|r| !r.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}
