//! Resolving the container's user (`--user`, the image's USER) inside its own root
//! filesystem, as Docker does: names through the container's /etc/passwd and /etc/group,
//! supplementary groups from /etc/group. The containers service puts the user string in
//! the `berth.user` annotation; the shim resolves it once the rootfs is mounted.

use std::path::Path;

pub use berth_common::task::USER_ANNOTATION;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn read_passwd(rootfs: &Path) -> Vec<PasswdEntry> {
    read_lines(rootfs, "etc/passwd")
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: fields.first()?.to_string(),
                uid: fields.get(2)?.parse().ok()?,
                gid: fields.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn read_group(rootfs: &Path) -> Vec<GroupEntry> {
    read_lines(rootfs, "etc/group")
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: fields.first()?.to_string(),
                gid: fields.get(2)?.parse().ok()?,
                members: fields
                    .get(3)
                    .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Lines of a file in the rootfs; a missing file (or a symlink pointing out of the rootfs,
/// which we refuse to follow) reads as empty.
fn read_lines(rootfs: &Path, relative: &str) -> impl Iterator<Item = String> {
    let path = rootfs.join(relative);
    let etc_is_real_dir =
        std::fs::symlink_metadata(rootfs.join("etc")).map(|m| m.file_type().is_dir()).unwrap_or(false);
    let text = match std::fs::symlink_metadata(&path) {
        Ok(meta) if etc_is_real_dir && meta.file_type().is_file() => std::fs::read_to_string(&path).unwrap_or_default(),
        _ => String::new(),
    };
    text.lines().filter(|l| !l.trim_start().starts_with('#')).map(str::to_string).collect::<Vec<_>>().into_iter()
}

/// Resolves "user", "uid", "user:group", "uid:gid" (empty means root).
pub fn resolve(rootfs: &Path, spec: &str) -> Result<ResolvedUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let passwd = read_passwd(rootfs);
    let groups = read_group(rootfs);

    let (uid, mut gid, name) = match user_part.parse::<u32>() {
        Ok(uid) => match passwd.iter().find(|e| e.uid == uid) {
            Some(entry) => (uid, entry.gid, Some(entry.name.clone())),
            None => (uid, 0, None),
        },
        Err(_) => match passwd.iter().find(|e| e.name == user_part) {
            Some(entry) => (entry.uid, entry.gid, Some(entry.name.clone())),
            None => return Err(UserError::NoUser(user_part.to_string())),
        },
    };
    if let Some(group) = group_part {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|g| g.name == group)
                .map(|g| g.gid)
                .ok_or_else(|| UserError::NoGroup(group.to_string()))?,
        };
    }
    // Supplementary groups only when the group was not given explicitly, as Docker does.
    let additional_gids = match (&name, group_part) {
        (Some(name), None) => {
            groups.iter().filter(|g| g.members.iter().any(|m| m == name) && g.gid != gid).map(|g| g.gid).collect()
        }
        _ => Vec::new(),
    };
    Ok(ResolvedUser { uid, gid, additional_gids })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\nnogroup:x:65534:\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn resolves_docker_user_forms() {
        let root = rootfs();
        assert_eq!(resolve(root.path(), "").unwrap(), ResolvedUser { uid: 0, gid: 0, additional_gids: vec![] });
        assert_eq!(
            resolve(root.path(), "app").unwrap(),
            ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![10] }
        );
        assert_eq!(
            resolve(root.path(), "nobody:wheel").unwrap(),
            ResolvedUser { uid: 65534, gid: 10, additional_gids: vec![] }
        );
        assert_eq!(resolve(root.path(), "4242").unwrap(), ResolvedUser { uid: 4242, gid: 0, additional_gids: vec![] });
        assert_eq!(
            resolve(root.path(), "4242:77").unwrap(),
            ResolvedUser { uid: 4242, gid: 77, additional_gids: vec![] }
        );
        assert_eq!(resolve(root.path(), "ghost").unwrap_err(), UserError::NoUser("ghost".into()));
        assert_eq!(resolve(root.path(), "app:ghosts").unwrap_err(), UserError::NoGroup("ghosts".into()));
    }

    #[test]
    fn does_not_follow_a_passwd_symlink_out_of_the_rootfs() {
        let root = rootfs();
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve(root.path(), "root").unwrap_err(), UserError::NoUser("root".into()));
    }
}
