//! The lazy disks of the power-loss faults: with
//! `docker-compose.powerloss.yml`, each node's `/data` is a lazy filesystem
//! mounted on the host, and the backend finds its control socket from the
//! container's mounts. Separate because only a cluster started for
//! power-loss faults has them; the faults themselves go through
//! [`crate::lazydisk`].

use crate::lazydisk::LazyControl;
use serde_json::Value;
use std::path::PathBuf;

/// Why a cluster started without `docker-compose.powerloss.yml` has no
/// power-loss faults.
pub(super) const POWER_LOSS_UNSUPPORTED: &str =
    "the containers' data directories are docker volumes, not \
     lazy-filesystem mounts (cluster/chaos.sh mounts them unless --no-power-loss)";

/// The compose override that binds each node's `/data` to a lazy
/// filesystem mounted on the host (see `cluster/chaos.sh`).
pub const POWER_LOSS_COMPOSE_FILE: &str = "docker-compose.powerloss.yml";

/// The control socket's name, beside the mount point of a node's lazy
/// filesystem on the host (`$LEASEHOLD_CHAOS_DIR/nodeN/{data,lazyfs.sock}`).
pub const LAZYFS_SOCKET: &str = "lazyfs.sock";

/// The lazy filesystem behind a container's `/data` mount: a bind mount
/// whose host directory has the control socket beside it.
pub(super) fn lazy_disk_of(mount: &Value) -> Option<LazyControl> {
    if mount.get("Type").and_then(Value::as_str) != Some("bind") {
        return None;
    }
    let source = PathBuf::from(mount.get("Source").and_then(Value::as_str)?);
    let socket = source.parent()?.join(LAZYFS_SOCKET);
    socket.exists().then_some(LazyControl {
        mountpoint: source,
        socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Power loss is offered for a node only when its `/data` is a bind
    /// mount with the lazy filesystem's control socket beside the source.
    #[test]
    fn a_lazy_disk_is_a_bind_mount_with_its_control_socket_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("node1").join("data");
        std::fs::create_dir_all(&data).unwrap();
        let bind = serde_json::json!({
            "Type": "bind", "Source": data.display().to_string(), "Destination": "/data"
        });
        assert!(
            lazy_disk_of(&bind).is_none(),
            "no control socket yet: a plain bind mount"
        );
        let socket = tmp.path().join("node1").join(LAZYFS_SOCKET);
        std::fs::write(&socket, b"").unwrap();
        let disk = lazy_disk_of(&bind).expect("a lazy disk");
        assert_eq!((disk.mountpoint, disk.socket), (data, socket));
        let volume = serde_json::json!({
            "Type": "volume", "Name": "leasehold_node1-data", "Destination": "/data"
        });
        assert!(lazy_disk_of(&volume).is_none());
    }
}
