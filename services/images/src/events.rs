//! Image events on the bus: pull, push, tag, delete, load, import (Docker's action names).

use berth_common::Namespace;
use berth_proto::events::v1::{Event, ImageDelete, ImageImport, ImagePull, ImagePush, ImageTag, event};

use crate::state::State;

async fn publish(
    state: &State,
    namespace: &Namespace,
    topic: &str,
    action: &str,
    actor: &str,
    payload: event::Payload,
) {
    let event = Event {
        r#type: "image".into(),
        action: action.into(),
        actor_id: actor.into(),
        attributes: [("name".to_string(), actor.to_string())].into(),
        payload: Some(payload),
    };
    match &state.events {
        Some(publisher) => publisher.publish(namespace, topic, event).await,
        None => tracing::info!(topic, actor, "event (no event service configured)"),
    }
}

pub async fn pull(state: &State, namespace: &Namespace, name: &str, digest: &str) {
    let payload = event::Payload::ImagePull(ImagePull { name: name.into(), digest: digest.into() });
    publish(state, namespace, "/images/pull", "pull", name, payload).await;
}

pub async fn tag(state: &State, namespace: &Namespace, source: &str, target: &str) {
    let payload = event::Payload::ImageTag(ImageTag { source: source.into(), target: target.into() });
    publish(state, namespace, "/images/tag", "tag", target, payload).await;
}

pub async fn delete(state: &State, namespace: &Namespace, name: &str, deleted: bool) {
    let payload = event::Payload::ImageDelete(ImageDelete { name: name.into(), deleted });
    let action = if deleted { "delete" } else { "untag" };
    publish(state, namespace, "/images/delete", action, name, payload).await;
}

pub async fn push(state: &State, namespace: &Namespace, name: &str, digest: &str) {
    let payload = event::Payload::ImagePush(ImagePush { name: name.into(), digest: digest.into() });
    publish(state, namespace, "/images/push", "push", name, payload).await;
}

/// Docker's import event names the image id; the name goes into the attributes.
pub async fn import(state: &State, namespace: &Namespace, name: &str, image_id: &str) {
    let payload = event::Payload::ImageImport(ImageImport { name: name.into(), image_id: image_id.into() });
    publish(state, namespace, "/images/import", "import", if name.is_empty() { image_id } else { name }, payload).await;
}
