//! `strata status`: the cluster at a glance — its servers and their health, connected clients,
//! each volume's use against its quota, and the garbage waiting for collection.

use anyhow::{Context, Result};
use serde::Serialize;
use strata_server::rest::model::{StatusView, VolumeView};

use crate::cmd::rest::Api;
use crate::util::{Output, ServerArgs, TokenArgs, emit, human, print_table};

/// Show the cluster: servers, clients, volume use, garbage.
///
/// The servers of the metadata store and their health (cluster tokens), the
/// connected clients with their host, mount point, volume and last heartbeat, each volume's use
/// against its quota, and (cluster tokens) the garbage waiting for collection. A token of a
/// department or project sees its own volumes and their clients only.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
}

/// What `-o json` prints: the server's status and the volumes.
#[derive(Serialize)]
struct ClusterView {
    #[serde(flatten)]
    status: StatusView,
    volumes: Vec<VolumeView>,
}

/// `(host, mount point or role)` of a session's client string (`host:/mnt/x`,
/// `host:s3-gateway:ADDR`).
fn host_and_where(client: &str) -> (&str, &str) {
    client.split_once(':').unwrap_or((client, ""))
}

fn percent(used: u64, quota: u64) -> String {
    if quota == 0 { "-".into() } else { format!("{:.0}%", used as f64 * 100.0 / quota as f64) }
}

/// Prints the status.
pub fn run(args: StatusArgs) -> Result<()> {
    let api = Api::new(&args.server, &args.token)?;
    crate::runtime()?.block_on(async {
        let status: StatusView = api.get("/v1/status").await.context("status")?;
        let volumes: Vec<VolumeView> = api.get("/v1/volumes").await.context("volumes")?;
        let v = ClusterView { status, volumes };
        emit(args.output, &v, || {
            let s = &v.status;
            let dir = s.data_dir.as_deref().map(|d| format!(", data in {d}")).unwrap_or_default();
            println!("server:   strata {} ({} metadata{dir}), up since {}", s.version, s.engine, s.started);
            if let Some(p) = s.pending_slices {
                println!("garbage:  {p} slices waiting for block deletion");
            }
            if let Some(servers) = &s.servers {
                let up = servers.iter().filter(|x| x.health == "up").count();
                println!("\nservers:  {} ({up} up)", servers.len());
                let rows: Vec<Vec<String>> = servers
                    .iter()
                    .map(|x| {
                        let health =
                            if x.health == "up" { "up".to_string() } else { format!("silent {}s", x.silent_secs) };
                        vec![x.addr.clone(), health, x.version.clone(), x.started.clone(), x.last_seen.clone()]
                    })
                    .collect();
                print_table(&["ADDRESS", "HEALTH", "VERSION", "STARTED", "LAST REPORT"], &rows);
            }
            println!("\nclients:  {}", s.sessions.len());
            if !s.sessions.is_empty() {
                let rows: Vec<Vec<String>> = s
                    .sessions
                    .iter()
                    .map(|x| {
                        let (host, at) = host_and_where(&x.client);
                        vec![
                            x.id.clone(),
                            host.to_string(),
                            at.to_string(),
                            x.volume.clone(),
                            if x.version.is_empty() { "?".into() } else { x.version.clone() },
                            x.since.clone(),
                            x.last_seen.clone(),
                        ]
                    })
                    .collect();
                print_table(&["SESSION", "HOST", "MOUNT", "VOLUME", "VERSION", "SINCE", "LAST HEARTBEAT"], &rows);
            }
            println!("\nvolumes:  {}", v.volumes.len());
            if !v.volumes.is_empty() {
                let rows: Vec<Vec<String>> = v
                    .volumes
                    .iter()
                    .map(|x| {
                        let quota = if x.capacity == 0 { "-".into() } else { human(x.capacity) };
                        let iq = if x.inode_limit == 0 { "-".into() } else { x.inode_limit.to_string() };
                        vec![
                            x.name.clone(),
                            x.scope.clone(),
                            human(x.used_bytes),
                            quota,
                            percent(x.used_bytes, x.capacity),
                            x.used_inodes.to_string(),
                            iq,
                        ]
                    })
                    .collect();
                print_table(&["VOLUME", "SCOPE", "USED", "QUOTA", "USE%", "INODES", "INODE QUOTA"], &rows);
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_strings() {
        assert_eq!(host_and_where("gpu1:/mnt/data"), ("gpu1", "/mnt/data"));
        assert_eq!(host_and_where("gw:s3-gateway:0.0.0.0:7480"), ("gw", "s3-gateway:0.0.0.0:7480"));
        assert_eq!(percent(50, 200), "25%");
        assert_eq!(percent(50, 0), "-");
    }
}
