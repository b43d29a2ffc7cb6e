//! `accessctl group ...`: the groups of the running config, what each may
//! reach and how many users are in it. Groups are defined in the config file,
//! not here: edit it and `accessctl reload`.

use clap::Subcommand;
use gatehouse_config::api::GroupInfo;

use crate::Ctx;
use crate::client::ClientError;
use crate::output::{self, OutputError, Table};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List the groups: subnets, ports and member count.
    #[command(
        long_about = "List the groups of the running config: the subnets each \
        may reach, the ports (\"all\" when unrestricted) and how many users are members.\n\n\
        Groups are defined in the config file; change them there and run \
        `accessctl reload`.\n\n\
        Example:\n  accessctl group list"
    )]
    List,
}

/// Why a `group` command failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Output(#[from] OutputError),
}

pub async fn run(cmd: GroupCommand, ctx: &Ctx) -> Result<(), GroupError> {
    match cmd {
        GroupCommand::List => {
            let reply = ctx.client.get::<Vec<GroupInfo>>("/v1/groups").await?;
            if ctx.json {
                ctx.out.emit_json(&reply.json)?;
            } else if reply.body.is_empty() {
                ctx.out
                    .emit("no groups: add [[group]] sections to the config file\n")?;
            } else {
                ctx.out.emit(&group_table(&reply.body).render())?;
            }
            Ok(())
        }
    }
}

fn group_table(groups: &[GroupInfo]) -> Table {
    let mut table = Table::new(&["NAME", "SUBNETS", "PORTS", "MEMBERS"]);
    for group in groups {
        let ports = match &group.ports {
            None => "all".to_owned(),
            Some(ports) => {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                output::list(&ports, ",")
            }
        };
        table.row(vec![
            group.name.clone(),
            output::list(&group.subnets, ","),
            ports,
            group.members.to_string(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_table_columns() {
        let groups = [
            GroupInfo {
                name: "research".into(),
                subnets: vec!["10.0.3.0/24".into()],
                ports: None,
                members: 4,
            },
            GroupInfo {
                name: "app-admins".into(),
                subnets: vec!["10.0.2.0/24".into(), "10.0.5.0/24".into()],
                ports: Some(vec![22, 3001]),
                members: 0,
            },
        ];
        assert_eq!(
            group_table(&groups).render(),
            "\
NAME        SUBNETS                  PORTS    MEMBERS
research    10.0.3.0/24              all      4
app-admins  10.0.2.0/24,10.0.5.0/24  22,3001  0
"
        );
    }
}
