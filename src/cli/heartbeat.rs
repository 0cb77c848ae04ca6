//! `leasehold heartbeat`: keep a node lease (`kube-node-lease/NODE`)
//! alive until interrupted, with the client's [`Heartbeat`] (the kubelet's
//! scheme: renew every quarter of the duration, re-acquire a lost lease).

use super::job::Signals;
use super::{connect, fail, invalid, lease_duration, seconds, Target, EXIT_OK};
use crate::client::heartbeat::{Heartbeat, HeartbeatConfig, NODE_LEASE_NAMESPACE};
use clap::Args;

/// `leasehold heartbeat` flags.
#[derive(Debug, Args)]
pub struct HeartbeatArgs {
    /// The node's name (the lease name and holder).
    pub node: String,
    /// Namespace of the node leases.
    #[arg(long, default_value = NODE_LEASE_NAMESPACE)]
    pub namespace: String,
    /// Lease duration in seconds.
    #[arg(long, default_value_t = 40)]
    pub duration: i32,
    /// Seconds between renewals (default: a quarter of the duration).
    #[arg(long)]
    pub renew_every: Option<f64>,
    /// Release the lease on exit, so monitors see the node leave at once.
    #[arg(long)]
    pub release_on_exit: bool,
}

/// `leasehold heartbeat`.
pub async fn heartbeat(target: &Target, args: HeartbeatArgs) -> i32 {
    let d = match lease_duration(args.duration) {
        Ok(d) => d,
        Err(m) => return invalid(m),
    };
    let renew_every = match args.renew_every {
        Some(s) => match seconds("renew-every", s) {
            Ok(v) => v,
            Err(m) => return invalid(m),
        },
        None => d / 4,
    };
    let mut config = HeartbeatConfig::new(args.node.clone());
    config.namespace = args.namespace.clone();
    config.duration = d;
    config.renew_interval = renew_every;
    config.release_on_stop = args.release_on_exit;
    let client = match connect(target) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let hb = match Heartbeat::new(client, config) {
        Ok(h) => h,
        Err(e) => return fail(&e),
    };
    eprintln!(
        "heartbeat {}/{}: duration {} s, renewed every {:.1} s until interrupted",
        args.namespace,
        args.node,
        args.duration,
        renew_every.as_secs_f64()
    );
    let mut signals = Signals::new();
    match hb
        .run(async {
            signals.recv().await;
        })
        .await
    {
        Ok(()) => EXIT_OK,
        Err(e) => fail(&e),
    }
}
