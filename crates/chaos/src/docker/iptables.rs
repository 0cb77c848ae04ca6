//! Partitions and packet loss: iptables DROP rules inside the containers,
//! in the dedicated chain [`CHAIN`] that INPUT and OUTPUT jump to. Holds the
//! rules, their `iptables` arguments, the parsing of `iptables -S` (which
//! the backend reads back to verify every change) and the methods that add
//! rules. Separate because it is one mechanism with its own text format,
//! unit-tested here without a cluster; healing (flushing the chain) stays
//! in the backend, as it also removes netem.

use super::DockerBackend;
use crate::backend::NodeId;
use std::collections::BTreeSet;

/// The iptables chain holding every rule the backend adds; INPUT and OUTPUT
/// jump to it first. Healing a node flushes it.
pub const CHAIN: &str = "LEASEHOLD-CHAOS";

impl DockerBackend {
    /// Creates [`CHAIN`] in node `id` and the jumps to it from INPUT and
    /// OUTPUT, unless they exist.
    pub(super) async fn ensure_chain(&self, id: NodeId) -> Result<(), String> {
        let listed = self
            .exec(id, &["iptables", "-w", "-S"])
            .await?
            .into_result()?;
        let state = parse_rules(&listed, CHAIN);
        if !state.exists {
            self.exec(id, &["iptables", "-w", "-N", CHAIN])
                .await?
                .into_result()?;
        }
        for hook in ["INPUT", "OUTPUT"] {
            if !state.jumps.contains(hook) {
                self.exec(id, &["iptables", "-w", "-I", hook, "1", "-j", CHAIN])
                    .await?
                    .into_result()?;
            }
        }
        Ok(())
    }

    /// Appends `rules` to node `id`'s chain and checks that `iptables -S`
    /// lists them and the jumps to the chain.
    pub(super) async fn add_rules(&self, id: NodeId, rules: &[Rule]) -> Result<(), String> {
        self.ensure_chain(id).await?;
        for r in rules {
            let args = r.append_args(CHAIN);
            let mut full = vec!["iptables", "-w"];
            full.extend(args.iter().map(String::as_str));
            self.exec(id, &full).await?.into_result()?;
        }
        let listed = self
            .exec(id, &["iptables", "-w", "-S"])
            .await?
            .into_result()?;
        let state = parse_rules(&listed, CHAIN);
        for hook in ["INPUT", "OUTPUT"] {
            if !state.jumps.contains(hook) {
                return Err(format!(
                    "node {id}: {hook} does not jump to {CHAIN}:\n{listed}"
                ));
            }
        }
        for r in rules {
            if !state.rules.iter().any(|have| have.same_as(r)) {
                return Err(format!(
                    "node {id}: rule `{}` is not listed by iptables -S:\n{listed}",
                    r.append_args(CHAIN).join(" ")
                ));
            }
        }
        Ok(())
    }
}

/// Which address a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// `-s`: packets from the address (INPUT).
    From,
    /// `-d`: packets to the address (OUTPUT).
    To,
}

/// One DROP rule of [`CHAIN`].
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Rule {
    dir: Dir,
    ip: String,
    /// Drop only this fraction (random), or every packet.
    probability: Option<f64>,
}

impl Rule {
    /// `-A CHAIN ...` arguments for iptables.
    fn append_args(&self, chain: &str) -> Vec<String> {
        let mut a = vec!["-A".to_string(), chain.to_string()];
        a.push(
            match self.dir {
                Dir::From => "-s",
                Dir::To => "-d",
            }
            .into(),
        );
        a.push(self.ip.clone());
        if let Some(p) = self.probability {
            a.extend(["-m", "statistic", "--mode", "random", "--probability"].map(String::from));
            a.push(format!("{p:.6}"));
        }
        a.extend(["-j", "DROP"].map(String::from));
        a
    }

    /// Whether a listed rule is this one (iptables lists `/32` and the
    /// probability rounded to its internal fixed point).
    fn same_as(&self, want: &Rule) -> bool {
        self.dir == want.dir
            && self.ip == want.ip
            && match (self.probability, want.probability) {
                (None, None) => true,
                (Some(a), Some(b)) => (a - b).abs() < 1e-6,
                _ => false,
            }
    }
}

/// Both directions of a cut from `peer_ip`.
pub(super) fn cut_rules(peer_ip: &str) -> Vec<Rule> {
    [Dir::From, Dir::To]
        .map(|dir| Rule {
            dir,
            ip: peer_ip.to_string(),
            probability: None,
        })
        .to_vec()
}

/// Both directions of random loss on the link to `peer_ip`.
pub(super) fn loss_rules(peer_ip: &str, fraction: f64) -> Vec<Rule> {
    [Dir::From, Dir::To]
        .map(|dir| Rule {
            dir,
            ip: peer_ip.to_string(),
            probability: Some(fraction),
        })
        .to_vec()
}

/// What `iptables -S` says about [`CHAIN`].
#[derive(Debug, Default, PartialEq)]
pub(super) struct ChainState {
    exists: bool,
    /// The built-in chains that jump to it.
    jumps: BTreeSet<String>,
    /// Its DROP rules; other rules are ignored.
    pub(super) rules: Vec<Rule>,
}

/// Parses `iptables -S` output (all chains of the filter table).
pub(super) fn parse_rules(listed: &str, chain: &str) -> ChainState {
    let mut st = ChainState::default();
    for line in listed.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["-N", c] if *c == chain => st.exists = true,
            ["-A", hook, "-j", c] if *c == chain => {
                st.jumps.insert(hook.to_string());
            }
            ["-A", c, rest @ ..] if *c == chain => {
                if let Some(r) = parse_rule(rest) {
                    st.rules.push(r);
                }
            }
            _ => {}
        }
    }
    st
}

/// One rule's fields after `-A CHAIN`, e.g. `-s 172.28.0.12/32 -m statistic
/// --mode random --probability 0.29999999981 -j DROP`.
fn parse_rule(f: &[&str]) -> Option<Rule> {
    let (dir, addr) = match f {
        ["-s", a, ..] => (Dir::From, a),
        ["-d", a, ..] => (Dir::To, a),
        _ => return None,
    };
    if f.last() != Some(&"DROP") {
        return None;
    }
    let ip = addr.strip_suffix("/32").unwrap_or(addr).to_string();
    let probability = f
        .iter()
        .position(|x| *x == "--probability")
        .and_then(|i| f.get(i + 1))
        .and_then(|p| p.parse::<f64>().ok());
    Some(Rule {
        dir,
        ip,
        probability,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_and_loss_rules_build_iptables_arguments() {
        let cut: Vec<String> = cut_rules("172.28.0.12")
            .iter()
            .map(|r| r.append_args(CHAIN).join(" "))
            .collect();
        assert_eq!(
            cut,
            [
                "-A LEASEHOLD-CHAOS -s 172.28.0.12 -j DROP",
                "-A LEASEHOLD-CHAOS -d 172.28.0.12 -j DROP"
            ]
        );
        let loss = loss_rules("172.28.0.13", 0.3);
        assert_eq!(
            loss[0].append_args(CHAIN).join(" "),
            "-A LEASEHOLD-CHAOS -s 172.28.0.13 -m statistic --mode random --probability 0.300000 -j DROP"
        );
    }

    #[test]
    fn parses_what_iptables_lists() {
        // As iptables-nft 1.8.9 prints it, probabilities rounded.
        let listed = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-N LEASEHOLD-CHAOS\n\
            -A INPUT -j LEASEHOLD-CHAOS\n-A OUTPUT -j LEASEHOLD-CHAOS\n\
            -A LEASEHOLD-CHAOS -s 172.28.0.12/32 -j DROP\n\
            -A LEASEHOLD-CHAOS -d 172.28.0.12/32 -j DROP\n\
            -A LEASEHOLD-CHAOS -s 172.28.0.13/32 -m statistic --mode random --probability 0.29999999981 -j DROP\n\
            -A OTHER -s 172.28.0.13/32 -j DROP\n";
        let st = parse_rules(listed, CHAIN);
        assert!(st.exists);
        assert_eq!(
            st.jumps,
            BTreeSet::from(["INPUT".to_string(), "OUTPUT".to_string()])
        );
        assert_eq!(st.rules.len(), 3);
        for want in cut_rules("172.28.0.12") {
            assert!(st.rules.iter().any(|r| r.same_as(&want)), "{want:?}");
        }
        let loss = &loss_rules("172.28.0.13", 0.3)[0];
        assert!(st.rules.iter().any(|r| r.same_as(loss)));
        // A full drop is not a random one, nor the other direction.
        assert!(!st
            .rules
            .iter()
            .any(|r| r.same_as(&loss_rules("172.28.0.12", 0.3)[0])));
        assert!(!st
            .rules
            .iter()
            .any(|r| r.same_as(&cut_rules("172.28.0.13")[1])));
        let empty = parse_rules("-P INPUT ACCEPT\n", CHAIN);
        assert_eq!(empty, ChainState::default());
    }
}
