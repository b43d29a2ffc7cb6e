//! `accessctl`: the gatehouse admin CLI. It talks to `accessd` over the admin
//! Unix socket (HTTP/1.1 + JSON, see `gatehouse_config::api`) and nothing else.
//!
//! Layout:
//! - `main.rs`: arguments, the runtime, and the edge where errors become a
//!   message on stderr and an exit code.
//! - [`client`]: the admin API client.
//! - [`output`]: tables and formatting helpers.
//! - [`args`]: value parsers shared by the commands (names, durations,
//!   audit kind prefixes with their completions).
//! - [`keys`]: SSH public key files and WireGuard key pairs.
//! - one module per command group: [`user`], [`device`], [`group`],
//!   [`status`] (status and reload), [`audit`], [`aws`].
//!
//! Exit codes: 0 ok; 1 error; 2 usage (clap, including names that break the
//! naming rule); 3 accessd not reachable. Never prompts, never needs a TTY.

mod anchored;
mod args;
mod audit;
mod aws;
mod backup;
mod client;
mod device;
mod group;
mod ha;
mod keys;
mod output;
mod progress;
mod ssh;
mod status;
#[cfg(test)]
mod testutil;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::client::{Client, ClientError};
use crate::output::{Out, OutputError};

const EXAMPLES: &str = "\
Examples:
  accessctl user add alice --group research --ssh-key alice.pub --expires 90d
  accessctl user list
  accessctl device config alice laptop --out alice-laptop.conf
  accessctl audit --since 24h --user alice
  accessctl audit verify
  accessctl aws plan
  accessctl --json user list | jq -r '.[].name'

Exit codes: 0 ok; 1 error (accessd refused the request, or something failed);
2 usage error; 3 accessd is not reachable on its admin socket.";

/// Administer a gatehouse gateway (accessd): users, devices, groups, audit log.
#[derive(Debug, Parser)]
#[command(name = "accessctl", version, after_long_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// accessd's admin socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        display_order = 900,
        env = "GATEHOUSE_SOCKET",
        default_value = gatehouse_config::file::DEFAULT_ADMIN_SOCKET
    )]
    pub socket: PathBuf,
    /// Print the API's JSON answer (pretty) instead of tables; `audit` prints
    /// one record per line.
    #[arg(long, global = true, display_order = 901)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, inspect, change and remove users.
    #[command(subcommand)]
    User(user::UserCommand),
    /// List and revoke WireGuard devices, and create one with its config file.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Show the groups of the running config.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// The SSH jump host's live channels; the user CA, certificates and KRL.
    #[command(subcommand)]
    Ssh(ssh::SshCommand),
    /// Show the gateway's state: version, uptime, keys, counts.
    Status,
    /// Re-read the config file; an invalid file is refused and the running config stays.
    #[command(long_about = "Re-read the config file (like SIGHUP).\n\n\
        An invalid file is refused and the running config stays; each problem is \
        printed on its own line and accessctl exits 1.\n\n\
        Example:\n  accessctl reload")]
    Reload,
    /// Review the audit log, follow it, or verify its hash chain.
    #[command(long_about = audit::LONG_ABOUT)]
    Audit(Box<audit::AuditArgs>),
    /// Write a consistent copy of the gateway's database (restore: accessd restore FILE).
    #[command(long_about = backup::LONG_ABOUT)]
    Backup(backup::BackupArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(long_about = "Print a shell completion script.\n\n\
        Examples:\n  accessctl completions bash > /etc/bash_completion.d/accessctl\n  \
        accessctl completions zsh > \"${fpath[1]}/_accessctl\"")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the accessctl(8) man page (roff), for packaging.
    #[command(hide = true)]
    Manpage,
    /// Plan and apply the gateway's AWS resources (elastic IP, security groups, routes, SSM key).
    #[command(subcommand)]
    Aws(aws::AwsCommand),
    /// The HA pair: each node's role, the lease, the last failover; hand over.
    #[command(subcommand)]
    Ha(ha::HaCommand),
}

/// What every command needs: the client and the output format.
#[derive(Debug)]
pub struct Ctx {
    pub client: Client,
    pub json: bool,
    pub out: Out,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Offline commands: no daemon, no runtime.
    match &cli.command {
        Command::Completions { shell } => return print_completions(*shell),
        Command::Manpage => return print_manpage(),
        _ => {}
    }
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let failure = Failure::of(&err);
            failure.print();
            ExitCode::from(failure.code)
        }
    }
}

fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory as _;
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "accessctl",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}

fn print_manpage() -> ExitCode {
    use clap::CommandFactory as _;
    let page = clap_mangen::Man::new(Cli::command()).section("8");
    match page.render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cannot write the man page: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command line to completion.
fn execute(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let ctx = Ctx {
        client: Client::new(cli.global.socket),
        json: cli.global.json,
        out: Out::stdout(),
    };
    runtime.block_on(dispatch(cli.command, &ctx))
}

async fn dispatch(command: Command, ctx: &Ctx) -> anyhow::Result<()> {
    match command {
        Command::User(cmd) => user::run(cmd, ctx).await?,
        Command::Device(cmd) => device::run(cmd, ctx).await?,
        Command::Group(cmd) => group::run(cmd, ctx).await?,
        Command::Ssh(cmd) => ssh::run(cmd, ctx).await?,
        Command::Status => status::status(ctx).await?,
        Command::Reload => status::reload(ctx).await?,
        Command::Audit(args) => audit::run(*args, ctx).await?,
        Command::Backup(args) => backup::run(args, ctx).await?,
        Command::Completions { .. } | Command::Manpage => {}
        Command::Aws(cmd) => aws::run(cmd, ctx).await?,
        Command::Ha(cmd) => ha::run(cmd, ctx).await?,
    }
    Ok(())
}

/// How an error is shown and which exit code it ends with.
#[derive(Debug, PartialEq, Eq)]
struct Failure {
    /// `None`: print nothing (the reader of stdout went away).
    message: Option<String>,
    /// Print `message` as is, without the `error: ` prefix.
    plain: bool,
    details: Vec<String>,
    code: u8,
}

impl Failure {
    fn of(err: &anyhow::Error) -> Self {
        let mut failure = Self {
            message: Some(err.to_string()),
            plain: false,
            details: Vec::new(),
            code: 1,
        };
        for cause in err.chain() {
            if let Some(client) = cause.downcast_ref::<ClientError>() {
                failure.code = client.exit_code();
                failure.plain = matches!(client, ClientError::Unreachable { .. });
                failure.details = client.details().to_vec();
                break;
            }
            if let Some(audit) = cause.downcast_ref::<audit::AuditError>() {
                failure.details = audit.details();
            }
            if cause
                .downcast_ref::<OutputError>()
                .is_some_and(OutputError::is_broken_pipe)
            {
                failure.message = None;
                failure.code = 0;
                break;
            }
        }
        failure
    }

    fn print(&self) {
        let Some(message) = &self.message else {
            return;
        };
        if self.plain {
            eprintln!("{message}");
        } else {
            eprintln!("error: {message}");
        }
        for detail in &self.details {
            eprintln!("  {detail}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Canned, FakeServer};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("accessctl").chain(args.iter().copied()))
    }

    fn parses(args: &[&str]) -> Cli {
        parse(args).unwrap_or_else(|e| panic!("{args:?} should parse: {e}"))
    }

    fn usage_error(args: &[&str]) -> clap::Error {
        match parse(args) {
            Ok(cli) => panic!("{args:?} should be a usage error, parsed as {cli:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
                e
            }
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parses(&["status", "--socket", "/tmp/a.sock", "--json"]);
        assert_eq!(cli.global.socket, PathBuf::from("/tmp/a.sock"));
        assert!(cli.global.json);
        let cli = parses(&["--json", "user", "list"]);
        assert!(cli.global.json);
        assert!(matches!(
            cli.command,
            Command::User(user::UserCommand::List)
        ));
    }

    #[test]
    fn every_command_parses() {
        for args in [
            &["status"][..],
            &["reload"],
            &["user", "add", "alice", "--group", "research"],
            &[
                "user",
                "add",
                "alice",
                "--group",
                "a,b",
                "--ssh-key",
                "-",
                "--expires",
                "30d",
            ],
            &["user", "list"],
            &["user", "show", "alice"],
            &["user", "disable", "alice"],
            &["user", "enable", "alice"],
            &["user", "remove", "alice"],
            &["user", "set-groups", "alice", "research", "ops"],
            &["user", "add-key", "alice", "alice.pub"],
            &["user", "add-key", "alice", "-"],
            &["user", "remove-key", "alice", "SHA256:abc+/def"],
            &["device", "list"],
            &["device", "list", "--user", "alice"],
            &["device", "revoke", "alice", "laptop"],
            &["device", "config", "alice", "laptop"],
            &[
                "device", "config", "alice", "laptop", "--out", "a.conf", "--force",
            ],
            &[
                "device",
                "config",
                "alice",
                "laptop",
                "--public-key",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ],
            &["group", "list"],
            &["audit"],
            &[
                "audit", "--since", "24h", "--user", "alice", "--kind", "ssh", "--limit", "50",
            ],
            &[
                "audit",
                "--since",
                "2026-05-01T00:00:00Z",
                "--until",
                "2026-05-02",
            ],
            &["audit", "--follow", "--json"],
            &["audit", "verify"],
            &["aws", "plan"],
            &["aws", "apply", "--json"],
            &["aws", "status"],
        ] {
            parses(args);
        }
    }

    #[test]
    fn usage_errors_exit_2() {
        for args in [
            &[][..],
            &["frobnicate"],
            &["user"],
            &["user", "add", "alice"],
            &["user", "add", "Alice", "--group", "research"],
            &["user", "add", "alice", "--group", "Research"],
            &["user", "add", "alice", "--group", "r", "--expires", "soon"],
            &["user", "show"],
            &["user", "set-groups", "alice"],
            &["user", "remove-key", "alice"],
            &["device", "revoke", "alice"],
            &["device", "revoke", "alice", "../laptop"],
            &[
                "device",
                "config",
                "alice",
                "laptop",
                "--public-key",
                "short",
            ],
            &["device", "config", "alice", "laptop", "--force"],
            &["audit", "--since", "yesterday"],
            &["audit", "--limit", "many"],
            &["audit", "--limit", "0"],
            &["audit", "verify", "--follow"],
        ] {
            usage_error(args);
        }
        let err = usage_error(&["user", "show", "Bob"]).to_string();
        assert!(err.contains("invalid user name \"Bob\""), "{err}");
    }

    #[test]
    fn audit_kind_takes_any_prefix_and_completes_every_kind() {
        use clap::CommandFactory as _;
        use gatehouse_config::audit_kind::AuditKind;
        // A prefix match: whole kinds, leading segments, and kinds of a newer accessd.
        for kind in [
            "ssh",
            "vpn.acl",
            "user.key.add",
            "aws.change",
            "future.kind",
        ] {
            let Command::Audit(args) = parses(&["audit", "--kind", kind]).command else {
                panic!("audit");
            };
            assert_eq!(args.filter.review.kind.as_deref(), Some(kind));
        }
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "accessctl",
            &mut script,
        );
        let script = String::from_utf8(script).expect("utf-8");
        let line = script
            .lines()
            .skip_while(|l| l.trim() != "--kind)")
            .find(|l| l.contains("COMPREPLY=($(compgen -W"))
            .expect("bash completes --kind values");
        let words: Vec<&str> = line
            .split('"')
            .nth(1)
            .expect("a word list")
            .split_whitespace()
            .collect();
        for kind in AuditKind::ALL {
            assert!(words.contains(&kind.as_str()), "{kind} in {words:?}");
        }
        for prefix in ["ssh", "vpn.acl", "user.key", "portal.login"] {
            assert!(words.contains(&prefix), "{prefix} in {words:?}");
        }
    }

    #[test]
    fn audit_help_lists_every_kind() {
        let help = usage_help(&["audit", "--help"]);
        for kind in gatehouse_config::audit_kind::AuditKind::ALL {
            assert!(help.contains(kind.as_str()), "{kind} in:\n{help}");
        }
        let short = usage_help(&["audit", "-h"]);
        assert!(!short.contains("user.key.add"), "-h stays short:\n{short}");
    }

    /// The help text `args` print (clap's early exit with code 0).
    fn usage_help(args: &[&str]) -> String {
        let err = parse(args).expect_err("help exits early");
        assert_eq!(err.exit_code(), 0, "{args:?}");
        err.render().to_string()
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for args in [&["--help"][..], &["user", "add", "--help"], &["--version"]] {
            let err = parse(args).expect_err("help exits early");
            assert_eq!(err.exit_code(), 0, "{args:?}");
        }
    }

    #[test]
    fn unreachable_daemon_exits_3() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let socket_arg = socket.to_str().expect("utf-8 temp path");
        for args in [
            &["status"][..],
            &["user", "list"],
            &["audit", "verify"],
            &["device", "config", "alice", "laptop", "--out"],
        ] {
            let mut args: Vec<&str> = args.to_vec();
            let out = dir.path().join("alice.conf");
            if args.last() == Some(&"--out") {
                args.push(out.to_str().expect("utf-8"));
            }
            args.extend(["--socket", socket_arg]);
            let err = execute(parses(&args)).expect_err("nothing listens");
            let failure = Failure::of(&err);
            assert_eq!(failure.code, 3, "{args:?}: {err:#}");
            assert!(failure.plain);
            let message = failure.message.expect("a message");
            assert!(
                message.starts_with(&format!("accessd is not reachable at {socket_arg}: ")),
                "{message}"
            );
            assert!(!out.exists(), "no config file is left behind");
        }
    }

    #[test]
    fn api_errors_exit_1_with_details() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = runtime.block_on(async {
            let server = FakeServer::start(vec![Canned::json(
                422,
                r#"{"code":"config_invalid","message":"/etc/gatehouse/gatehouse.toml is invalid",
                    "details":["line 3, column 1: group.subnets: 0.0.0.0/0 is a default route",
                               "line 9: unknown key 'prot'"]}"#,
            )])
            .await;
            let ctx = Ctx {
                client: Client::new(server.socket()),
                json: false,
                out: Out::capture(),
            };
            let err = dispatch(Command::Reload, &ctx).await.expect_err("422");
            let requests = server.requests().await;
            assert_eq!(
                (requests[0].method.as_str(), requests[0].target.as_str()),
                ("POST", "/v1/reload")
            );
            err
        });
        let failure = Failure::of(&err);
        assert_eq!(
            failure,
            Failure {
                message: Some("/etc/gatehouse/gatehouse.toml is invalid".into()),
                plain: false,
                details: vec![
                    "line 3, column 1: group.subnets: 0.0.0.0/0 is a default route".into(),
                    "line 9: unknown key 'prot'".into(),
                ],
                code: 1,
            }
        );
    }
}
