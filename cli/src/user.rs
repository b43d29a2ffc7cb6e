//! `accessctl user ...`: create users (with their one-time enrollment link),
//! list and show them, disable, enable and remove them, set their groups, and
//! manage their SSH public keys.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use gatehouse_config::api::{
    AddKeyRequest, CreateUserRequest, CreateUserResponse, Enrollment, RemoveKeyQuery,
    SetGroupsRequest, SetNoLoginRequest, SshKeyInfo, UserDetail, UserState, UserSummary,
};

use crate::Ctx;
use crate::client::{self, ClientError};
use crate::keys::{self, KeyError};
use crate::output::{self, OutputError, Table};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a pending user and print their one-time enrollment link.
    #[command(
        long_about = "Create a pending user and print their one-time enrollment link.\n\n\
        The user opens the link in the portal, sets a password (and TOTP when the \
        gateway requires it) and can then download device configs. The link works \
        once and expires; the token is shown only now (`user enrollment-link` makes \
        a new one). A machine account (--no-login) is active at once and gets no \
        link: it never logs in to the portal. With --oidc-subject the user signs in \
        with the gateway's identity provider ([oidc]) instead: no link, and the \
        first SSO login activates them (with oidc.require_totp, once its TOTP step \
        is done; under oidc.totp_enrollment = \"admin_link\", the default, their app \
        comes from `user enrollment-link`).\n\n\
        Examples:\n  \
        accessctl user add alice --group research --ssh-key ~/keys/alice.pub\n  \
        accessctl user add bob --group research,app-admins --expires 30d\n  \
        curl -s https://github.com/carol.keys | accessctl user add carol --group research --ssh-key -\n  \
        accessctl user add ci-runner --group research --no-login\n  \
        accessctl user add dana --group research --oidc-subject 00u1a2b3c4d5e6f7g8h9"
    )]
    Add(AddArgs),
    /// List all users.
    List,
    /// Show one user: groups, reachable subnets, keys and devices.
    Show {
        /// The user.
        #[arg(value_parser = crate::args::user_name)]
        name: String,
    },
    /// Disable a user: their devices and SSH access stop working until enabled.
    Disable {
        /// The user.
        #[arg(value_parser = crate::args::user_name)]
        name: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// The user.
        #[arg(value_parser = crate::args::user_name)]
        name: String,
    },
    /// Remove a user with their devices and keys.
    Remove {
        /// The user.
        #[arg(value_parser = crate::args::user_name)]
        name: String,
    },
    /// Replace a user's groups (what they may reach follows at once).
    #[command(
        long_about = "Replace a user's groups; what they may reach follows at once.\n\n\
        Their device configs' AllowedIPs change with it: devices need a new config \
        to route newly allowed subnets (packets to subnets no longer allowed are \
        dropped by the gateway either way).\n\n\
        Example:\n  accessctl user set-groups alice research app-admins"
    )]
    SetGroups {
        /// The user.
        #[arg(value_parser = crate::args::user_name)]
        name: String,
        /// The new groups, all of them.
        #[arg(required = true, num_args = 1.., value_parser = crate::args::group_name)]
        groups: Vec<String>,
    },
    /// Say whether a user is a machine that cannot log in to the portal.
    #[command(
        long_about = "Say whether a user is a machine that cannot log in to the portal.\n\n\
        With vpn.require_login (the default) a person's devices are peers only for \
        vpn.session_lifetime after each portal login. A no-login user's devices stay \
        live while the user is enabled, like require_login = false for everyone. \
        The change is audited.\n\n\
        Examples:\n  accessctl user set-no-login ci-runner on\n  accessctl user set-no-login ci-runner off"
    )]
    SetNoLogin {
        /// The user.
        #[arg(value_parser = crate::args::user_name)]
        name: String,
        /// on: devices need no portal login; off: they do.
        #[arg(action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "on|off")]
        no_login: bool,
    },
    /// Print a new one-time enrollment link for a pending user (when the
    /// first expired or was lost; older unused links stop working), or for
    /// any active one without an authenticator app (as an SSO member under
    /// oidc.require_totp with totp_enrollment = "admin_link"); enrolling
    /// with it sets a new password and the app.
    EnrollmentLink {
        /// The user (pending, or active without an authenticator app; not a
        /// machine account).
        #[arg(value_parser = crate::args::user_name)]
        name: String,
    },
    /// Add SSH public keys to a user (every key line of FILE; '-' reads stdin).
    AddKey {
        /// The user.
        #[arg(value_parser = crate::args::user_name)]
        name: String,
        /// A public key file (e.g. id_ed25519.pub) or '-' for stdin; each
        /// non-empty, non-'#' line is one key.
        #[arg(value_name = "FILE|-")]
        file: PathBuf,
    },
    /// Remove one SSH key from a user, by fingerprint (see `user show`).
    RemoveKey {
        /// The user.
        #[arg(value_parser = crate::args::user_name)]
        name: String,
        /// The key's fingerprint as `ssh-keygen -lf` prints it: SHA256:...
        fingerprint: String,
    },
}

/// `user add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The new user's name: a lowercase letter, then up to 31 of a-z 0-9 . _ -
    #[arg(value_parser = crate::args::user_name)]
    pub name: String,
    /// A group the user joins; repeat it or separate with commas.
    #[arg(
        long = "group",
        value_name = "GROUP",
        required = true,
        value_delimiter = ',',
        value_parser = crate::args::group_name
    )]
    pub groups: Vec<String>,
    /// An SSH public key file for the jump host, or '-' for stdin; repeatable;
    /// every non-empty, non-'#' line is one key.
    #[arg(long = "ssh-key", value_name = "FILE|-")]
    pub ssh_keys: Vec<PathBuf>,
    /// The account expires this long after creation (e.g. 30d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = crate::args::positive_duration)]
    pub expires: Option<Duration>,
    /// A machine that cannot log in to the portal: its devices stay live
    /// while the user is enabled, without the portal login that
    /// vpn.require_login otherwise asks for.
    #[arg(long)]
    pub no_login: bool,
    /// Link the user to this subject (the `sub` claim of their ID token) at
    /// the identity provider of [oidc]: they sign in with SSO, and get no
    /// enrollment link.
    #[arg(long, value_name = "SUB", conflicts_with = "no_login")]
    pub oidc_subject: Option<String>,
}

/// Why a `user` command failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Keys(#[from] KeyError),
    #[error("{0}")]
    Output(#[from] OutputError),
}

pub async fn run(cmd: UserCommand, ctx: &Ctx) -> Result<(), UserError> {
    match cmd {
        UserCommand::Add(args) => add(args, ctx).await,
        UserCommand::List => list(ctx).await,
        UserCommand::Show { name } => {
            let reply = ctx.client.get::<UserDetail>(&user_path(&name)).await?;
            show_detail(ctx, &reply.json, || render_detail(&reply.body))
        }
        UserCommand::Disable { name } => {
            let path = format!("{}/disable", user_path(&name));
            let reply = ctx.client.post::<(), UserDetail>(&path, None).await?;
            show_detail(ctx, &reply.json, || {
                format!(
                    "user {name} disabled: their devices and SSH access stop working \
                     until `accessctl user enable {name}`\n"
                )
            })
        }
        UserCommand::Enable { name } => {
            let path = format!("{}/enable", user_path(&name));
            let reply = ctx.client.post::<(), UserDetail>(&path, None).await?;
            show_detail(ctx, &reply.json, || {
                format!("user {name} enabled ({})\n", reply.body.state.as_str())
            })
        }
        UserCommand::Remove { name } => {
            let reply = ctx.client.delete::<UserDetail>(&user_path(&name)).await?;
            let user = &reply.body;
            show_detail(ctx, &reply.json, || {
                format!(
                    "user {name} removed, with {} device(s) and {} SSH key(s)\n",
                    user.devices.len(),
                    user.ssh_keys.len()
                )
            })
        }
        UserCommand::SetGroups { name, groups } => {
            let path = format!("{}/groups", user_path(&name));
            let reply = ctx
                .client
                .put::<_, UserDetail>(&path, &SetGroupsRequest { groups })
                .await?;
            let user = &reply.body;
            show_detail(ctx, &reply.json, || {
                format!(
                    "user {name}: groups {}; reaches {}\n",
                    output::list(&user.groups, ", "),
                    output::list(&user.subnets, ", ")
                )
            })
        }
        UserCommand::EnrollmentLink { name } => {
            let path = format!("{}/enrollment", user_path(&name));
            let reply = ctx.client.post::<(), Enrollment>(&path, None).await?;
            show_detail(ctx, &reply.json, || render_link(&name, &reply.body))
        }
        UserCommand::SetNoLogin { name, no_login } => {
            let path = format!("{}/no-login", user_path(&name));
            let reply = ctx
                .client
                .put::<_, UserDetail>(&path, &SetNoLoginRequest { no_login })
                .await?;
            show_detail(ctx, &reply.json, || {
                let user = &reply.body;
                let mut text = format!(
                    "user {name}: {}, VPN {}\n",
                    user.state.as_str(),
                    user.vpn_access.as_str()
                );
                if user.state == UserState::Pending {
                    let _ = writeln!(
                        text,
                        "{name} has never enrolled: `accessctl user enrollment-link {name}` makes the link to send"
                    );
                }
                text
            })
        }
        UserCommand::AddKey { name, file } => add_keys(&name, file, ctx).await,
        UserCommand::RemoveKey { name, fingerprint } => {
            let path = client::with_query(
                &format!("{}/keys", user_path(&name)),
                &RemoveKeyQuery { fingerprint },
            )?;
            let reply = ctx.client.delete::<SshKeyInfo>(&path).await?;
            let key = &reply.body;
            show_detail(ctx, &reply.json, || {
                format!(
                    "removed {} key {} ({}) from {name}\n",
                    key.algorithm,
                    key.fingerprint,
                    output::or_dash(Some(&key.comment))
                )
            })
        }
    }
}

async fn add(args: AddArgs, ctx: &Ctx) -> Result<(), UserError> {
    let ssh_keys = keys::read_ssh_keys(&args.ssh_keys)?;
    let request = CreateUserRequest {
        name: args.name,
        groups: args.groups,
        ssh_keys,
        expires_in_secs: args.expires.map(|d| d.as_secs()),
        no_login: args.no_login,
        oidc_subject: args.oidc_subject,
    };
    let reply = ctx
        .client
        .post::<_, CreateUserResponse>("/v1/users", Some(&request))
        .await?;
    show_detail(ctx, &reply.json, || render_created(&reply.body))
}

async fn list(ctx: &Ctx) -> Result<(), UserError> {
    let reply = ctx.client.get::<Vec<UserSummary>>("/v1/users").await?;
    show_detail(ctx, &reply.json, || {
        if reply.body.is_empty() {
            "no users yet (add one with `accessctl user add NAME --group GROUP`)\n".to_owned()
        } else {
            user_table(&reply.body).render()
        }
    })
}

async fn add_keys(name: &str, file: PathBuf, ctx: &Ctx) -> Result<(), UserError> {
    let lines = keys::read_ssh_keys(&[file])?;
    let path = format!("{}/keys", user_path(name));
    let mut added = Vec::new();
    let mut json = Vec::new();
    for public_key in lines {
        let reply = ctx
            .client
            .post::<_, SshKeyInfo>(&path, Some(&AddKeyRequest { public_key }))
            .await?;
        added.push(reply.body);
        json.push(reply.json);
    }
    // One key: the API's answer as is; several: an array of them.
    let json = if json.len() == 1 {
        json.remove(0)
    } else {
        serde_json::Value::Array(json)
    };
    show_detail(ctx, &json, || {
        let mut out = String::new();
        for key in &added {
            let _ = writeln!(
                out,
                "added {} key {} ({}) to {name}",
                key.algorithm,
                key.fingerprint,
                output::or_dash(Some(&key.comment))
            );
        }
        out
    })
}

/// `/v1/users/{name}`; names passed the naming rule, so they need no escaping.
fn user_path(name: &str) -> String {
    format!("/v1/users/{name}")
}

/// Prints the JSON answer with `--json`, else the text `render` makes.
fn show_detail(
    ctx: &Ctx,
    json: &serde_json::Value,
    render: impl FnOnce() -> String,
) -> Result<(), UserError> {
    if ctx.json {
        ctx.out.emit_json(json)?;
    } else {
        ctx.out.emit(&render())?;
    }
    Ok(())
}

fn user_table(users: &[UserSummary]) -> Table {
    let mut table = Table::new(&[
        "NAME",
        "STATE",
        "GROUPS",
        "DEVICES",
        "KEYS",
        "EXPIRES",
        "LAST-SEEN",
    ]);
    for user in users {
        table.row(vec![
            user.name.clone(),
            user.state.as_str().to_owned(),
            output::list(&user.groups, ","),
            user.devices.to_string(),
            user.ssh_keys.to_string(),
            expiry(user.expires_at.as_deref(), user.expired, "-"),
            output::opt_time(user.last_seen.as_deref(), "-"),
        ]);
    }
    table
}

fn expiry(expires_at: Option<&str>, expired: bool, none: &str) -> String {
    let time = output::opt_time(expires_at, none);
    if expired {
        format!("{time} (expired)")
    } else {
        time
    }
}

fn render_detail(user: &UserDetail) -> String {
    let mut out = String::new();
    let rows = [
        ("user", user.name.clone()),
        ("state", user.state.as_str().to_owned()),
        ("groups", output::list(&user.groups, ", ")),
        ("reaches", output::list(&user.subnets, ", ")),
        ("created", output::short_time(&user.created_at)),
        (
            "expires",
            expiry(user.expires_at.as_deref(), user.expired, "never"),
        ),
        (
            "last seen",
            output::opt_time(user.last_seen.as_deref(), "never"),
        ),
        ("vpn", vpn_access(user)),
        (
            "sso",
            user.sso.as_ref().map_or_else(
                || "not linked".to_owned(),
                |sso| {
                    format!(
                        "{} at {} (since {})",
                        sso.subject,
                        sso.issuer,
                        output::short_time(&sso.linked_at)
                    )
                },
            ),
        ),
    ];
    for (label, value) in rows {
        let _ = writeln!(out, "{label:<10} {value}");
    }
    let _ = writeln!(out, "\nSSH keys ({})", user.ssh_keys.len());
    if !user.ssh_keys.is_empty() {
        let mut table = Table::new(&["FINGERPRINT", "ALGORITHM", "COMMENT", "ADDED"]);
        for key in &user.ssh_keys {
            table.row(vec![
                key.fingerprint.clone(),
                key.algorithm.clone(),
                key.comment.clone(),
                output::short_time(&key.added_at),
            ]);
        }
        out.push_str(&table.render_indented("  "));
    }
    let _ = writeln!(out, "\nDevices ({})", user.devices.len());
    if !user.devices.is_empty() {
        let mut table = Table::new(&[
            "DEVICE",
            "ADDRESS",
            "PUBLIC-KEY",
            "CREATED",
            "LAST-HANDSHAKE",
        ]);
        for device in &user.devices {
            table.row(vec![
                device.name.clone(),
                device.address.clone(),
                device.public_key.clone(),
                output::short_time(&device.created_at),
                output::opt_time(device.last_handshake.as_deref(), "never"),
            ]);
        }
        out.push_str(&table.render_indented("  "));
    }
    out
}

/// The `vpn` line of `user show`: whether devices are live, and until when.
fn vpn_access(user: &UserDetail) -> String {
    let mut text = user.vpn_access.as_str().to_owned();
    if let Some(until) = &user.vpn_access_until {
        let _ = write!(text, " until {}", output::short_time(until));
    }
    if user.no_login {
        text.push_str("; machine account (--no-login)");
    }
    text
}

fn render_created(created: &CreateUserResponse) -> String {
    let user = &created.user;
    let link = &created.enrollment;
    let mut out = String::new();
    let _ = writeln!(out, "created user {} ({})", user.name, user.state.as_str());
    let _ = writeln!(out, "  groups    {}", output::list(&user.groups, ", "));
    let _ = writeln!(out, "  reaches   {}", output::list(&user.subnets, ", "));
    let _ = writeln!(out, "  SSH keys  {}", user.ssh_keys.len());
    for key in &user.ssh_keys {
        let _ = writeln!(
            out,
            "            {} {} {}",
            key.fingerprint, key.algorithm, key.comment
        );
    }
    if !user.ssh_keys.is_empty() && user.state == UserState::Pending {
        // A pending user is refused at the jump host (user_not_active).
        let _ = writeln!(
            out,
            "            the jump host takes them once {0} has enrolled (or after `accessctl user enable {0}`)",
            user.name
        );
    }
    let _ = writeln!(
        out,
        "  expires   {}",
        expiry(user.expires_at.as_deref(), user.expired, "never")
    );
    let _ = writeln!(out);
    match link {
        Some(link) => out.push_str(&render_link(&user.name, link)),
        None if user.sso.is_some() => {
            let _ = writeln!(
                out,
                "{0} signs in with the identity provider (no enrollment link); their first SSO login activates them (with oidc.require_totp and totp_enrollment = \"admin_link\", send `accessctl user enrollment-link {0}` for their authenticator app).",
                user.name
            );
        }
        None => {
            let _ = writeln!(
                out,
                "{0} is a machine account: active now, with no enrollment link and no portal login. \
                 The jump host takes its SSH keys; `accessctl device config {0} DEVICE` makes its VPN \
                 devices, live while it is active.",
                user.name
            );
        }
    }
    out
}

/// The link block: URL, token, expiry, and what to do with it.
fn render_link(name: &str, link: &Enrollment) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "enrollment link  {}", link.url);
    let _ = writeln!(out, "token            {}", link.token);
    let _ = writeln!(
        out,
        "link expires     {}",
        output::short_time(&link.expires_at)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Send this link to {name}; it works once and expires at {}.",
        output::short_time(&link.expires_at)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::output::Out;
    use crate::testutil::{Canned, FakeServer};
    use gatehouse_config::api::{DeviceInfo, Enrollment, UserState, VpnAccessState};

    fn detail() -> UserDetail {
        UserDetail {
            name: "alice".into(),
            state: UserState::Pending,
            groups: vec!["research".into()],
            subnets: vec!["10.0.3.0/24".into()],
            created_at: "2026-05-01T10:00:00.123Z".into(),
            expires_at: Some("2026-06-01T10:00:00Z".into()),
            expired: false,
            last_seen: None,
            no_login: false,
            vpn_access: VpnAccessState::Session,
            vpn_access_until: Some("2026-05-01T22:00:00Z".into()),
            ssh_keys: vec![SshKeyInfo {
                fingerprint: "SHA256:abc".into(),
                algorithm: "ssh-ed25519".into(),
                comment: "alice@laptop".into(),
                added_at: "2026-05-01T10:00:00Z".into(),
            }],
            devices: vec![DeviceInfo {
                user: "alice".into(),
                name: "laptop".into(),
                public_key: "PUB".into(),
                address: "10.200.0.2".into(),
                created_at: "2026-05-01T10:00:00Z".into(),
                last_activation: None,
                last_handshake: None,
                ..DeviceInfo::default()
            }],
            sso: None,
        }
    }

    #[test]
    fn user_table_columns() {
        let users = vec![
            UserSummary {
                name: "alice".into(),
                state: UserState::Active,
                groups: vec!["research".into(), "ops".into()],
                devices: 2,
                ssh_keys: 1,
                expires_at: None,
                expired: false,
                last_seen: Some("2026-05-01T10:00:00.5Z".into()),
            },
            UserSummary {
                name: "bob".into(),
                state: UserState::Disabled,
                groups: vec![],
                devices: 0,
                ssh_keys: 0,
                expires_at: Some("2026-01-01T00:00:00Z".into()),
                expired: true,
                last_seen: None,
            },
        ];
        assert_eq!(
            user_table(&users).render(),
            "\
NAME   STATE     GROUPS        DEVICES  KEYS  EXPIRES                         LAST-SEEN
alice  active    research,ops  2        1     -                               2026-05-01T10:00:00Z
bob    disabled  -             0        0     2026-01-01T00:00:00Z (expired)  -
"
        );
    }

    #[test]
    fn detail_shows_keys_and_devices() {
        let text = render_detail(&detail());
        assert!(
            text.starts_with("user       alice\nstate      pending\n"),
            "{text}"
        );
        assert!(text.contains("reaches    10.0.3.0/24\n"), "{text}");
        assert!(text.contains("last seen  never\n"), "{text}");
        assert!(
            text.contains("vpn        portal session until 2026-05-01T22:00:00Z\n"),
            "{text}"
        );
        assert!(text.contains("  SHA256:abc   ssh-ed25519"), "{text}");
        assert!(text.contains("  laptop  10.200.0.2  PUB"), "{text}");
    }

    #[test]
    fn a_pending_user_with_keys_is_told_when_the_jump_host_takes_them() {
        let mut user = detail();
        user.state = UserState::Pending;
        assert!(!user.ssh_keys.is_empty());
        let text = render_created(&CreateUserResponse {
            user,
            enrollment: Some(Enrollment {
                token: "t".into(),
                url: "https://gw/enroll/t".into(),
                expires_at: "2026-05-02T10:00:00Z".into(),
            }),
        });
        assert!(
            text.contains("the jump host takes them once alice has enrolled (or after `accessctl user enable alice`)"),
            "{text}"
        );
        let mut keyless = detail();
        keyless.ssh_keys.clear();
        let text = render_created(&CreateUserResponse {
            user: keyless,
            enrollment: Some(Enrollment {
                token: "t".into(),
                url: "https://gw/enroll/t".into(),
                expires_at: "2026-05-02T10:00:00Z".into(),
            }),
        });
        assert!(
            !text.contains("the jump host takes them"),
            "no keys, nothing to say: {text}"
        );
    }

    #[test]
    fn created_user_shows_link_and_instructions() {
        let text = render_created(&CreateUserResponse {
            user: detail(),
            enrollment: Some(Enrollment {
                token: "tok123".into(),
                url: "https://gw.example.org/enroll/tok123".into(),
                expires_at: "2026-05-02T10:00:00Z".into(),
            }),
        });
        assert!(text.contains("enrollment link  https://gw.example.org/enroll/tok123\n"));
        assert!(text.contains("token            tok123\n"));

        assert!(text.ends_with(
            "Send this link to alice; it works once and expires at 2026-05-02T10:00:00Z.\n"
        ));
    }

    #[test]
    fn a_machine_account_is_told_it_is_active_and_gets_no_link() {
        let mut user = detail();
        user.no_login = true;
        let text = render_created(&CreateUserResponse {
            user,
            enrollment: None,
        });
        assert!(
            text.contains("alice is a machine account: active now, with no enrollment link"),
            "{text}"
        );
        assert!(!text.contains("enrollment link  "), "{text}");
    }

    #[tokio::test]
    async fn add_sends_keys_and_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("alice.pub");
        std::fs::write(
            &key_file,
            "# work\nssh-ed25519 AAAA alice@a\nssh-ed25519 BBBB alice@b\n",
        )
        .expect("write");
        let answer = serde_json::json!({
            "user": detail(),
            "enrollment": {"token": "t", "url": "https://gw/enroll/t", "expires_at": "2026-05-02T10:00:00Z"}
        });
        let server = FakeServer::start(vec![Canned::json(201, &answer.to_string())]).await;
        let ctx = Ctx {
            client: Client::new(server.socket()),
            json: true,
            out: Out::capture(),
        };
        add(
            AddArgs {
                name: "alice".into(),
                groups: vec!["research".into(), "ops".into()],
                ssh_keys: vec![key_file],
                expires: Some(Duration::from_secs(30 * 86_400)),
                no_login: false,
                oidc_subject: None,
            },
            &ctx,
        )
        .await
        .expect("created");
        let requests = server.requests().await;
        assert_eq!(requests[0].target, "/v1/users");
        let sent: serde_json::Value = serde_json::from_str(&requests[0].body).expect("json");
        assert_eq!(
            sent,
            serde_json::json!({
                "name": "alice",
                "groups": ["research", "ops"],
                "ssh_keys": ["ssh-ed25519 AAAA alice@a", "ssh-ed25519 BBBB alice@b"],
                "expires_in_secs": 2_592_000,
                "no_login": false
            })
        );
    }

    #[tokio::test]
    async fn remove_key_encodes_the_fingerprint() {
        let key = serde_json::json!({
            "fingerprint": "SHA256:ab+c/d=", "algorithm": "ssh-ed25519",
            "comment": "", "added_at": "2026-05-01T10:00:00Z"
        });
        let server = FakeServer::start(vec![Canned::json(200, &key.to_string())]).await;
        let ctx = Ctx {
            client: Client::new(server.socket()),
            json: false,
            out: Out::capture(),
        };
        run(
            UserCommand::RemoveKey {
                name: "alice".into(),
                fingerprint: "SHA256:ab+c/d=".into(),
            },
            &ctx,
        )
        .await
        .expect("removed");
        let requests = server.requests().await;
        assert_eq!(requests[0].method, "DELETE");
        assert_eq!(
            requests[0].target,
            "/v1/users/alice/keys?fingerprint=SHA256%3Aab%2Bc%2Fd%3D"
        );
    }

    #[tokio::test]
    async fn list_prints_a_table_or_json() {
        let users = serde_json::json!([{
            "name": "alice", "state": "active", "groups": ["research"], "devices": 1,
            "ssh_keys": 2, "expires_at": null, "expired": false, "last_seen": null
        }]);
        let server = FakeServer::start(vec![
            Canned::json(200, &users.to_string()),
            Canned::json(200, &users.to_string()),
        ])
        .await;
        let mut ctx = Ctx {
            client: Client::new(server.socket()),
            json: false,
            out: Out::capture(),
        };
        run(UserCommand::List, &ctx).await.expect("list");
        assert!(
            ctx.out.captured().starts_with("NAME   STATE   GROUPS"),
            "{}",
            ctx.out.captured()
        );
        ctx.json = true;
        ctx.out = Out::capture();
        run(UserCommand::List, &ctx).await.expect("list");
        let printed: serde_json::Value =
            serde_json::from_str(&ctx.out.captured()).expect("pretty JSON");
        assert_eq!(printed, users);
    }
}
