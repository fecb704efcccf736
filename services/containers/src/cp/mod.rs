//! `docker cp`: copying files out of and into a container's filesystem, running or not.
//!
//! Every path is resolved by the kernel inside the container's root (`openat2` with
//! `RESOLVE_IN_ROOT`), and every file below it is opened relative to its directory's fd
//! without following symlinks, so a link like `/etc/evil -> /` in the container reads and
//! writes the container's own root, never the host's. Volumes mounted inside the container
//! are not visible here (they live in the container's mount namespace).

mod archive;
mod extract;
mod resolve;
mod rootfs;
mod stream;

pub use archive::write_archive;
pub use extract::{ExtractOptions, extract_archive};
pub use resolve::{PathInfo, stat_in_root};
pub use rootfs::MountedRootfs;
pub use stream::{ChannelReader, ChannelWriter};
