//! Packet delay: netem, on a band of a prio qdisc that only the peers'
//! traffic is filtered to (replies to clients are not delayed). Kept apart
//! because it is optional: many kernels lack `sch_netem`, so the backend
//! probes it once ([`DockerBackend::probe_netem`]) and reports the delay
//! fault unsupported otherwise.

use super::DockerBackend;
use crate::backend::NodeId;
use std::time::Duration;

/// The egress band the delay filters send peer traffic to (see
/// [`delay_commands`]).
const DELAY_BAND: &str = "1:4";

impl DockerBackend {
    /// The interface carrying node `id`'s cluster address.
    pub(super) async fn iface_of(&self, id: NodeId) -> Result<String, String> {
        let ip = &self.info(id)?.node.ip;
        let out = self
            .exec(id, &["ip", "-o", "-4", "addr", "show"])
            .await?
            .into_result()
            .map_err(|e| format!("node {id}: cannot list addresses: {e}"))?;
        iface_for_ip(&out, ip).ok_or_else(|| format!("node {id}: no interface has {ip}:\n{out}"))
    }

    /// The interface found at construction, or looked up now (the node may
    /// not have been running then).
    pub(super) async fn iface(&self, id: NodeId) -> Result<String, String> {
        match &self.info(id)?.iface {
            i if !i.is_empty() => Ok(i.clone()),
            _ => self.iface_of(id).await,
        }
    }

    /// Whether node `id` can delay packets: adds a netem qdisc, then the
    /// whole construct [`DockerBackend::delay`](crate::backend::Backend::delay)
    /// uses, and removes it.
    pub(super) async fn probe_netem(&self, id: NodeId) -> Result<(), String> {
        let iface = self.iface(id).await?;
        let out = self
            .exec(
                id,
                &[
                    "tc", "qdisc", "add", "dev", &iface, "root", "netem", "delay", "1ms",
                ],
            )
            .await?;
        let _ = self
            .exec(id, &["tc", "qdisc", "del", "dev", &iface, "root"])
            .await;
        if !out.ok {
            return Err(format!(
                "packet delay needs the kernel's netem qdisc (sch_netem), which this kernel \
                 lacks or the container cannot use: {}",
                out.failure()
            ));
        }
        let peers: Vec<String> = self.peer_ips(id);
        let result = self
            .apply_delay(id, &iface, &peers, Duration::from_millis(1))
            .await;
        let _ = self
            .exec(id, &["tc", "qdisc", "del", "dev", &iface, "root"])
            .await;
        result.map_err(|e| format!("netem works but per-peer delay does not: {e}"))
    }

    /// Delays node `id`'s packets to `dsts` by `by` and checks that tc
    /// lists the netem qdisc.
    pub(super) async fn apply_delay(
        &self,
        id: NodeId,
        iface: &str,
        dsts: &[String],
        by: Duration,
    ) -> Result<(), String> {
        for cmd in delay_commands(iface, dsts, by) {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            self.exec(id, &args).await?.into_result()?;
        }
        let shown = self
            .exec(id, &["tc", "qdisc", "show", "dev", iface])
            .await?
            .into_result()?;
        if !shown.contains("netem") {
            return Err(format!("node {id}: no netem listed on {iface}: {shown}"));
        }
        Ok(())
    }
}

/// The interface of `ip -o -4 addr show` output that carries `ip`.
fn iface_for_ip(out: &str, ip: &str) -> Option<String> {
    out.lines().find_map(|line| {
        // "11: eth0    inet 172.28.0.11/24 brd ... scope global eth0\ ..."
        let mut f = line.split_whitespace();
        let _index = f.next()?;
        let name = f.next()?;
        let _family = f.next()?;
        let addr = f.next()?;
        let name = name.split('@').next()?;
        (addr.split('/').next() == Some(ip)).then(|| name.to_string())
    })
}

/// The tc commands that delay `iface`'s egress to `dsts` by `by` and
/// nothing else: a prio root qdisc with a fourth band no priority maps to,
/// netem on that band, and u32 filters sending the peers' traffic to it, so
/// replies to clients are not delayed.
fn delay_commands(iface: &str, dsts: &[String], by: Duration) -> Vec<Vec<String>> {
    // prio's default priomap, over 4 bands instead of 3: band 4 (1:4) only
    // gets what the filters send there.
    const PRIOMAP: &str = "1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1";
    let ms = by.as_millis().max(1);
    let mut cmds = vec![
        format!("tc qdisc replace dev {iface} root handle 1: prio bands 4 priomap {PRIOMAP}"),
        format!("tc qdisc replace dev {iface} parent {DELAY_BAND} handle 40: netem delay {ms}ms"),
    ];
    for d in dsts {
        cmds.push(format!(
            "tc filter add dev {iface} parent 1:0 protocol ip prio 1 u32 match ip dst {d}/32 flowid {DELAY_BAND}"
        ));
    }
    // Interface names and addresses hold no whitespace.
    cmds.iter()
        .map(|c| c.split_whitespace().map(String::from).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_interface_of_an_address() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
                   11: eth0    inet 172.28.0.11/24 brd 172.28.0.255 scope global eth0\\       valid_lft forever\n\
                   12: eth1@if13    inet 10.0.0.2/24 scope global eth1\n";
        assert_eq!(iface_for_ip(out, "172.28.0.11").as_deref(), Some("eth0"));
        assert_eq!(iface_for_ip(out, "10.0.0.2").as_deref(), Some("eth1"));
        assert_eq!(iface_for_ip(out, "172.28.0.1"), None);
    }

    #[test]
    fn delay_touches_only_peer_traffic() {
        let cmds = delay_commands("eth0", &["172.28.0.12".into()], Duration::from_millis(150));
        let joined: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert!(joined[0].starts_with("tc qdisc replace dev eth0 root handle 1: prio bands 4"));
        assert_eq!(
            joined[1],
            "tc qdisc replace dev eth0 parent 1:4 handle 40: netem delay 150ms"
        );
        assert_eq!(
            joined[2],
            "tc filter add dev eth0 parent 1:0 protocol ip prio 1 u32 match ip dst 172.28.0.12/32 flowid 1:4"
        );
        // The priomap never selects band 4 (index 3) by itself.
        assert!(!cmds[0][11..].contains(&"3".to_string()));
    }
}
