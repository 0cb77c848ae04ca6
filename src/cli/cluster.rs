//! The cluster commands: `status`, `member add|remove|replace|list` and
//! `health`.

use super::output::{self, Format};
use super::{CliError, MemberAction};
use crate::client::Client;
use crate::proto::v1 as pb;

/// `leasehold status`: the answering node's view of the cluster.
pub async fn status(client: &Client, format: Format) -> Result<String, CliError> {
    let s = client.status().await?;
    Ok(match format {
        Format::Table => {
            let mut out = format!(
                "node {} ({}), leader {} at {}, term {}, commit {}, applied {}, revision {}\n",
                s.node_id,
                s.state.to_lowercase(),
                s.leader_id,
                if s.leader_address.is_empty() {
                    "-"
                } else {
                    &s.leader_address
                },
                s.term,
                s.commit_index,
                s.applied_index,
                s.revision
            );
            if !s.version.is_empty() {
                out.push_str(&format!(
                    "version {}, on-disk format {}\n",
                    s.version, s.format_version
                ));
            }
            out.push_str(&members_table(&s.members, s.leader_id));
            out
        }
        f => output::render(&output::status_json(&s), f),
    })
}

/// `leasehold member ACTION`: prints the membership the change left (or,
/// for `list`, the current one with its leader).
pub async fn member(
    client: &Client,
    action: MemberAction,
    format: Format,
) -> Result<String, CliError> {
    let (members, leader) = match action {
        MemberAction::Add { id, address } => (
            client
                .add_member(pb::AddMemberRequest { id, address })
                .await?
                .members,
            0,
        ),
        MemberAction::Remove { id } => (
            client
                .remove_member(pb::RemoveMemberRequest { id })
                .await?
                .members,
            0,
        ),
        MemberAction::Replace { id, address } => (
            client
                .replace_member(pb::ReplaceMemberRequest {
                    id,
                    address: address.unwrap_or_default(),
                })
                .await?
                .members,
            0,
        ),
        MemberAction::List => {
            let s = client.status().await?;
            (s.members, s.leader_id)
        }
    };
    Ok(match format {
        Format::Table => members_table(&members, leader),
        f => output::render(&output::members_json(&members), f),
    })
}

/// `leasehold health`: succeeds if the node serves requests and knows a
/// leader.
pub async fn health(client: &Client, format: Format) -> Result<String, CliError> {
    let s = client.status().await?;
    if s.state == "SHUTDOWN" || s.leader_id == 0 {
        return Err(tonic::Status::unavailable(format!("node {} has no leader", s.node_id)).into());
    }
    Ok(match format {
        Format::Table => format!(
            "ok: node {} ({}), leader {}\n",
            s.node_id,
            s.state.to_lowercase(),
            s.leader_id
        ),
        f => output::render(&output::status_json(&s), f),
    })
}

fn members_table(members: &[pb::Member], leader: u64) -> String {
    let mut rows = vec![vec!["ID".to_string(), "ADDRESS".into(), "ROLE".into()]];
    for m in members {
        let role = if m.id == leader && leader != 0 {
            "voter (leader)".to_string()
        } else {
            output::role(m).to_string()
        };
        rows.push(vec![m.id.to_string(), m.address.clone(), role]);
    }
    output::table(&rows)
}
