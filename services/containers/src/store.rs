//! Container records in `<root>/containers.db`: one tree of records keyed by
//! `<namespace>/<id>`, one name index keyed by `<namespace>/<name>`. Every change is
//! flushed before it is acknowledged.

use std::path::Path;

use berth_common::Namespace;
use berth_common::store::{ns_key, ns_prefix};
use berth_proto::containers::v1::Container;
use prost::Message;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    containers: sled::Tree,
    names: sled::Tree,
}

impl Store {
    pub fn open(root: &Path) -> std::result::Result<Store, berth_common::store::OpenError> {
        let db = berth_common::store::open_db(root, "containers.db")?;
        let open_tree = |name: &str| db.open_tree(name);
        let (containers, names) = match (open_tree("containers"), open_tree("names")) {
            (Ok(c), Ok(n)) => (c, n),
            (Err(e), _) | (_, Err(e)) => {
                return Err(berth_common::store::OpenError::new(root.join("containers.db"), e));
            }
        };
        Ok(Store { db, containers, names })
    }

    /// The database itself, for the other trees this service keeps in it (networks,
    /// network attachments, volumes).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Stores a new container, failing if its name is taken.
    pub async fn insert_new(&self, namespace: &Namespace, container: &Container) -> Result<()> {
        let key = ns_key(namespace, &container.id);
        let name_key = ns_key(namespace, &container.name);
        let bytes = container.encode_to_vec();
        let result = (&self.containers, &self.names).transaction(|(containers, names)| {
            if let Some(owner) = names.get(&name_key)? {
                return Err(ConflictableTransactionError::Abort(String::from_utf8_lossy(&owner).into_owned()));
            }
            names.insert(name_key.as_slice(), container.id.as_bytes())?;
            containers.insert(key.as_slice(), bytes.as_slice())?;
            Ok(())
        });
        match result {
            Ok(()) => self.flush().await,
            Err(sled::transaction::TransactionError::Abort(owner)) => {
                Err(Error::NameInUse { name: container.name.clone(), id: owner })
            }
            Err(sled::transaction::TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    pub fn get(&self, namespace: &Namespace, id: &str) -> Result<Option<Container>> {
        match self.containers.get(ns_key(namespace, id))? {
            Some(bytes) => Ok(Some(Container::decode(bytes.as_ref())?)),
            None => Ok(None),
        }
    }

    /// Replaces an existing record (not its name).
    pub async fn update(&self, namespace: &Namespace, container: &Container) -> Result<()> {
        self.containers.insert(ns_key(namespace, &container.id), container.encode_to_vec())?;
        self.flush().await
    }

    pub async fn remove(&self, namespace: &Namespace, container: &Container) -> Result<()> {
        let key = ns_key(namespace, &container.id);
        let name_key = ns_key(namespace, &container.name);
        (&self.containers, &self.names)
            .transaction(|(containers, names)| {
                containers.remove(key.as_slice())?;
                if names.get(&name_key)?.as_deref() == Some(container.id.as_bytes()) {
                    names.remove(name_key.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => Error::Store(e),
                sled::transaction::TransactionError::Abort(()) => Error::FailedPrecondition("removal aborted".into()),
            })?;
        self.flush().await
    }

    pub async fn rename(&self, namespace: &Namespace, container: &mut Container, new_name: &str) -> Result<()> {
        let old_key = ns_key(namespace, &container.name);
        let new_key = ns_key(namespace, new_name);
        let mut renamed = container.clone();
        renamed.name = new_name.to_string();
        let key = ns_key(namespace, &container.id);
        let bytes = renamed.encode_to_vec();
        let result = (&self.containers, &self.names).transaction(|(containers, names)| {
            if let Some(owner) = names.get(&new_key)? {
                return Err(ConflictableTransactionError::Abort(String::from_utf8_lossy(&owner).into_owned()));
            }
            names.remove(old_key.as_slice())?;
            names.insert(new_key.as_slice(), renamed.id.as_bytes())?;
            containers.insert(key.as_slice(), bytes.as_slice())?;
            Ok(())
        });
        match result {
            Ok(()) => {
                *container = renamed;
                self.flush().await
            }
            Err(sled::transaction::TransactionError::Abort(owner)) => {
                Err(Error::NameInUse { name: new_name.to_string(), id: owner })
            }
            Err(sled::transaction::TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    pub fn list(&self, namespace: &Namespace) -> Result<Vec<Container>> {
        self.containers
            .scan_prefix(ns_prefix(namespace))
            .values()
            .map(|value| Ok(Container::decode(value?.as_ref())?))
            .collect()
    }

    /// Every container of every namespace (for recovery at start).
    pub fn list_all(&self) -> Result<Vec<(Namespace, Container)>> {
        let mut all = Vec::new();
        for entry in self.containers.iter() {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key);
            let Some((namespace, _)) = key.split_once('/') else { continue };
            let Ok(namespace) = Namespace::new(namespace) else { continue };
            all.push((namespace, Container::decode(value.as_ref())?));
        }
        Ok(all)
    }

    /// A container by full id, name, or unique id prefix — as Docker resolves them.
    pub fn resolve(&self, namespace: &Namespace, reference: &str) -> Result<Container> {
        let reference = reference.strip_prefix('/').unwrap_or(reference);
        if reference.is_empty() {
            return Err(Error::InvalidArgument("a container id or name is required".into()));
        }
        if let Some(container) = self.get(namespace, reference)? {
            return Ok(container);
        }
        if let Some(id) = self.names.get(ns_key(namespace, reference))?
            && let Some(container) = self.get(namespace, &String::from_utf8_lossy(&id))?
        {
            return Ok(container);
        }
        let mut matches = self.containers.scan_prefix(ns_key(namespace, reference)).values();
        match (matches.next(), matches.next()) {
            (Some(first), None) => Ok(Container::decode(first?.as_ref())?),
            (Some(_), Some(_)) => {
                Err(Error::Ambiguous(format!("multiple containers found with provided prefix: {reference}")))
            }
            _ => Err(Error::NotFound(reference.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, name: &str) -> Container {
        Container { id: id.into(), name: name.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn names_are_unique_and_references_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ns = Namespace::default_namespace();
        store.insert_new(&ns, &container("abc123", "web")).await.unwrap();
        store.insert_new(&ns, &container("abd456", "db")).await.unwrap();
        let err = store.insert_new(&ns, &container("fff", "web")).await.unwrap_err();
        assert!(matches!(err, Error::NameInUse { ref id, .. } if id == "abc123"));
        // Another namespace has its own names.
        store.insert_new(&Namespace::new("other").unwrap(), &container("fff", "web")).await.unwrap();

        assert_eq!(store.resolve(&ns, "web").unwrap().id, "abc123");
        assert_eq!(store.resolve(&ns, "/db").unwrap().id, "abd456");
        assert_eq!(store.resolve(&ns, "abc").unwrap().id, "abc123");
        assert!(matches!(store.resolve(&ns, "ab"), Err(Error::Ambiguous(_))));
        assert!(matches!(store.resolve(&ns, "zzz"), Err(Error::NotFound(_))));

        let mut web = store.resolve(&ns, "web").unwrap();
        store.rename(&ns, &mut web, "front").await.unwrap();
        assert_eq!(store.resolve(&ns, "front").unwrap().id, "abc123");
        assert!(store.resolve(&ns, "web").is_err());
        store.remove(&ns, &web).await.unwrap();
        assert!(store.resolve(&ns, "front").is_err());
        assert_eq!(store.list(&ns).unwrap().len(), 1);
        assert_eq!(store.list_all().unwrap().len(), 2);
    }
}
