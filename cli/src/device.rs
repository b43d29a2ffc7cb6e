//! `accessctl device ...`: list and revoke WireGuard devices, and create a
//! device with its wg-quick file (`device config`).
//!
//! `device config` generates the device's key pair here, sends only the public
//! key, and writes the private key into the rendered file and nowhere else: the
//! gateway never holds it.

use std::fs::{OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, Subcommand};
use gatehouse_config::api::{
    CONNECTED_WITHIN_SECS, CreateDeviceRequest, DeviceConfigResponse, DeviceInfo, DeviceListQuery,
};
use gatehouse_config::wg_quick;

use crate::Ctx;
use crate::client::{self, ClientError};
use crate::keys::{self, WgKeyPair};
use crate::output::{self, OutputError, Table};

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List devices, of every user or of one.
    List {
        /// Only this user's devices.
        #[arg(long, value_parser = crate::args::user_name)]
        user: Option<String>,
    },
    /// Revoke a device: its peer is removed and its address freed.
    Revoke {
        /// The device's user.
        #[arg(value_parser = crate::args::user_name)]
        user: String,
        /// The device.
        #[arg(value_parser = crate::args::device_name)]
        device: String,
    },
    /// Create a device for a user and print (or write) its wg-quick file.
    #[command(
        long_about = "Create a device for a user and print (or write) its wg-quick file.\n\n\
        Without --public-key, accessctl generates the device's key pair itself and \
        sends only the public key: the private key goes into the file and nowhere \
        else, the gateway never sees it. With --public-key (from `wg pubkey` on the \
        device), the file has no PrivateKey line; the device adds its own.\n\n\
        The tunnel is split: AllowedIPs is exactly the subnets the user's groups \
        reach.\n\n\
        Examples:\n  \
        accessctl device config alice laptop --out alice-laptop.conf\n  \
        accessctl device config alice phone --public-key \"$(wg pubkey < phone.key)\"\n  \
        accessctl device config alice laptop > alice-laptop.conf"
    )]
    Config(ConfigArgs),
}

/// `device config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The device's user.
    #[arg(value_parser = crate::args::user_name)]
    pub user: String,
    /// A name for the new device (e.g. laptop, phone).
    #[arg(value_parser = crate::args::device_name)]
    pub device: String,
    /// The device's own WireGuard public key (base64, as `wg pubkey` prints);
    /// without it a key pair is generated here.
    #[arg(long, value_name = "KEY", value_parser = keys::wg_public_key)]
    pub public_key: Option<String>,
    /// Write the file here (created with mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Overwrite FILE if it exists.
    #[arg(long, requires = "out")]
    pub force: bool,
}

/// Why a `device` command failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Output(#[from] OutputError),
    #[error("{} exists already; pick another file or add --force to overwrite it", path.display())]
    OutExists { path: PathBuf },
    #[error(
        "device {user}/{device} was created, but its config could not be written to {}: {source}. \
         Revoke it (accessctl device revoke {user} {device}) and create it again",
        path.display()
    )]
    WriteConfig {
        user: String,
        device: String,
        path: PathBuf,
        source: io::Error,
    },
}

pub async fn run(cmd: DeviceCommand, ctx: &Ctx) -> Result<(), DeviceError> {
    match cmd {
        DeviceCommand::List { user } => {
            let path = client::with_query("/v1/devices", &DeviceListQuery { user })?;
            let reply = ctx.client.get::<Vec<DeviceInfo>>(&path).await?;
            if ctx.json {
                ctx.out.emit_json(&reply.json)?;
            } else if reply.body.is_empty() {
                ctx.out.emit("no devices\n")?;
            } else {
                ctx.out.emit(
                    &device_table(&reply.body, SystemTime::now(), KeyColumn::Show).render(),
                )?;
            }
            Ok(())
        }
        DeviceCommand::Revoke { user, device } => {
            let path = format!("/v1/users/{user}/devices/{device}");
            let reply = ctx.client.delete::<DeviceInfo>(&path).await?;
            if ctx.json {
                ctx.out.emit_json(&reply.json)?;
            } else {
                ctx.out.emit(&format!(
                    "revoked device {user}/{device} ({}, public key {})\n",
                    reply.body.address, reply.body.public_key
                ))?;
            }
            Ok(())
        }
        DeviceCommand::Config(args) => config(args, ctx).await,
    }
}

async fn config(args: ConfigArgs, ctx: &Ctx) -> Result<(), DeviceError> {
    // Refuse before creating anything on the gateway.
    if let Some(out) = &args.out
        && !args.force
        && out.symlink_metadata().is_ok()
    {
        return Err(DeviceError::OutExists { path: out.clone() });
    }
    let (public_key, generated) = match &args.public_key {
        Some(key) => (key.clone(), None),
        None => {
            let pair = WgKeyPair::generate();
            (pair.public.clone(), Some(pair))
        }
    };
    let request = CreateDeviceRequest {
        name: args.device.clone(),
        public_key,
    };
    let reply = ctx
        .client
        .post::<_, DeviceConfigResponse>(
            &format!("/v1/users/{}/devices", args.user),
            Some(&request),
        )
        .await?;
    let rendered = wg_quick::render(
        &reply.body,
        generated.as_ref().map(WgKeyPair::private_base64),
    );

    let Some(out) = &args.out else {
        if ctx.json {
            let mut json = reply.json;
            if let Some(object) = json.as_object_mut() {
                object.insert("config".to_owned(), serde_json::Value::String(rendered));
            }
            ctx.out.emit_json(&json)?;
        } else {
            ctx.out.emit(&rendered)?;
        }
        return Ok(());
    };

    write_private(out, &rendered, args.force).map_err(|source| DeviceError::WriteConfig {
        user: args.user.clone(),
        device: args.device.clone(),
        path: out.clone(),
        source,
    })?;
    if ctx.json {
        // The private key stays in the file: point at it instead of repeating it.
        let mut json = reply.json;
        if let Some(object) = json.as_object_mut() {
            object.insert(
                "config_path".to_owned(),
                serde_json::Value::String(out.display().to_string()),
            );
        }
        ctx.out.emit_json(&json)?;
    } else {
        ctx.out
            .emit(&summary(&reply.body, out, generated.is_some()))?;
    }
    Ok(())
}

fn summary(cfg: &DeviceConfigResponse, out: &Path, has_private_key: bool) -> String {
    let mut text = format!(
        "created device {}/{}\n  address      {}\n  allowed IPs  {}\n  endpoint     {}\n  config       {}\n",
        cfg.device.user,
        cfg.device.name,
        cfg.interface_address,
        output::list(&cfg.allowed_ips, ", "),
        cfg.endpoint,
        out.display()
    );
    if has_private_key {
        text.push_str(&format!(
            "The private key is in {} only; it was not stored anywhere else.\n",
            out.display()
        ));
    } else {
        text.push_str("The file has no PrivateKey line: add the device's own private key to it.\n");
    }
    text
}

/// Writes `text` to a file only its owner can read. Without `overwrite` an
/// existing file is never touched.
fn write_private(path: &Path, text: &str, overwrite: bool) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path)?;
    // `mode` applies only on creation; an overwritten file may have been wider.
    file.set_permissions(Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Whether a device table ends with the PUBLIC-KEY column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyColumn {
    Show,
    Hide,
}

/// One row per device. The live columns (STATE, ENDPOINT, HANDSHAKE as
/// "12s ago", RX, TX) come from the data plane; "-" where it has nothing.
pub(crate) fn device_table(devices: &[DeviceInfo], now: SystemTime, keys: KeyColumn) -> Table {
    let mut headers = vec![
        "USER",
        "DEVICE",
        "ADDRESS",
        "STATE",
        "ENDPOINT",
        "HANDSHAKE",
        "RX",
        "TX",
    ];
    if keys == KeyColumn::Show {
        headers.push("PUBLIC-KEY");
    }
    let mut table = Table::new(&headers);
    for device in devices {
        let mut row = vec![
            device.user.clone(),
            device.name.clone(),
            device.address.clone(),
            state(device, now).to_owned(),
            output::or_dash(device.endpoint.as_deref()),
            output::ago(device.last_handshake.as_deref(), now, "never"),
            device.rx_bytes.map(output::human_bytes).unwrap_or_default(),
            device.tx_bytes.map(output::human_bytes).unwrap_or_default(),
        ];
        if keys == KeyColumn::Show {
            row.push(device.public_key.clone());
        }
        table.row(row);
    }
    table
}

/// `connected`: a peer with a handshake in the last 180 s; `live`: a peer
/// without one; "-": not a peer now (revoked, user disabled or expired, or
/// the data plane is not running).
pub(crate) fn state(device: &DeviceInfo, now: SystemTime) -> &'static str {
    if device.live != Some(true) {
        return "-";
    }
    let recent = device
        .last_handshake
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .is_some_and(|t| {
            now.duration_since(t)
                .map_or(true, |d| d.as_secs() < CONNECTED_WITHIN_SECS)
        });
    if recent { "connected" } else { "live" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::output::Out;
    use crate::testutil::{Canned, FakeServer};

    fn config_answer(public_key: &str) -> String {
        serde_json::json!({
            "device": {
                "user": "alice", "name": "laptop", "public_key": public_key,
                "address": "10.200.0.2", "created_at": "2026-05-01T10:00:00Z",
                "last_activation": null, "last_handshake": null
            },
            "interface_address": "10.200.0.2/32",
            "gateway_public_key": "R0FURVdBWUdBVEVXQVlHQVRFV0FZR0FURVdBWUdBVEU=",
            "endpoint": "gw.example.org:51820",
            "allowed_ips": ["10.0.3.0/24"],
            "persistent_keepalive": 25,
            "mtu": 1420
        })
        .to_string()
    }

    fn args(out: Option<PathBuf>, public_key: Option<&str>) -> ConfigArgs {
        ConfigArgs {
            user: "alice".into(),
            device: "laptop".into(),
            public_key: public_key.map(str::to_owned),
            out,
            force: false,
        }
    }

    #[tokio::test]
    async fn config_generates_the_key_here_and_writes_a_private_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("alice-laptop.conf");
        // The fake answers with whatever key; the test checks the request instead.
        let server = FakeServer::start(vec![Canned::json(201, &config_answer("K"))]).await;
        let ctx = Ctx {
            client: Client::new(server.socket()),
            json: false,
            out: Out::capture(),
        };
        config(args(Some(out.clone()), None), &ctx)
            .await
            .expect("created");
        let printed = ctx.out.captured();
        assert!(
            printed.contains("it was not stored anywhere else"),
            "{printed}"
        );
        assert!(!printed.contains("PrivateKey"), "{printed}");

        let requests = server.requests().await;
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].target, "/v1/users/alice/devices");
        let sent: serde_json::Value = serde_json::from_str(&requests[0].body).expect("json");
        let object = sent.as_object().expect("object");
        assert_eq!(object.len(), 2, "only name and public key: {sent}");
        assert_eq!(sent["name"], "laptop");
        let public = sent["public_key"].as_str().expect("public key");
        assert!(keys::wg_public_key(public).is_ok());

        let mode = std::fs::metadata(&out)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&out).expect("read");
        let private = text
            .lines()
            .find_map(|l| l.strip_prefix("PrivateKey = "))
            .expect("a PrivateKey line");
        assert_ne!(private, public);
        assert!(
            !requests[0].body.contains(private),
            "the private key never leaves"
        );
        assert!(text.contains("AllowedIPs = 10.0.3.0/24\n"));

        // A second run refuses to overwrite, before asking the daemon anything.
        let err = config(args(Some(out.clone()), None), &ctx)
            .await
            .expect_err("exists");
        assert!(matches!(err, DeviceError::OutExists { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn config_with_a_public_key_has_no_private_key_and_json_holds_the_file() {
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let server = FakeServer::start(vec![Canned::json(201, &config_answer(key))]).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("x.conf");
        std::fs::write(&out, "old").expect("write");
        std::fs::set_permissions(&out, Permissions::from_mode(0o644)).expect("chmod");
        let ctx = Ctx {
            client: Client::new(server.socket()),
            json: false,
            out: Out::capture(),
        };
        let mut forced = args(Some(out.clone()), Some(key));
        forced.force = true;
        config(forced, &ctx).await.expect("created");
        let requests = server.requests().await;
        let sent: serde_json::Value = serde_json::from_str(&requests[0].body).expect("json");
        assert_eq!(sent["public_key"], key);
        let text = std::fs::read_to_string(&out).expect("read");
        assert!(!text.lines().any(|l| l.starts_with("PrivateKey")), "{text}");
        let mode = std::fs::metadata(&out).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "an overwritten file is narrowed too");
    }

    #[test]
    fn summary_says_where_the_key_is() {
        let cfg: DeviceConfigResponse = serde_json::from_str(&config_answer("K")).expect("json");
        let text = summary(&cfg, Path::new("a.conf"), true);
        assert!(text.contains("  allowed IPs  10.0.3.0/24\n"), "{text}");
        assert!(
            text.contains("The private key is in a.conf only; it was not stored anywhere else.")
        );
    }

    #[test]
    fn device_table_columns() {
        let cfg: DeviceConfigResponse = serde_json::from_str(&config_answer("PUB")).expect("json");
        let now = humantime::parse_rfc3339("2026-05-01T12:00:00Z").expect("time");
        let connected = DeviceInfo {
            name: "phone".into(),
            address: "10.200.0.3".into(),
            public_key: "PUB2".into(),
            last_handshake: Some("2026-05-01T11:59:48Z".into()),
            endpoint: Some("198.51.100.7:40000".into()),
            rx_bytes: Some(1536),
            tx_bytes: Some(12_900_000),
            live: Some(true),
            ..cfg.device.clone()
        };
        let idle = DeviceInfo {
            name: "tablet".into(),
            last_handshake: Some("2026-05-01T09:00:00Z".into()),
            rx_bytes: Some(0),
            tx_bytes: Some(0),
            live: Some(true),
            ..cfg.device.clone()
        };
        let revoked = DeviceInfo {
            name: "old".into(),
            live: Some(false),
            ..cfg.device.clone()
        };
        assert_eq!(
            device_table(
                &[cfg.device, connected, idle, revoked],
                now,
                KeyColumn::Show
            )
            .render(),
            "\
USER   DEVICE  ADDRESS     STATE      ENDPOINT            HANDSHAKE  RX       TX        PUBLIC-KEY
alice  laptop  10.200.0.2  -          -                   never      -        -         PUB
alice  phone   10.200.0.3  connected  198.51.100.7:40000  12s ago    1.5 KiB  12.3 MiB  PUB2
alice  tablet  10.200.0.2  live       -                   3h 0m ago  0 B      0 B       PUB
alice  old     10.200.0.2  -          -                   never      -        -         PUB
"
        );
    }

    #[test]
    fn devices_from_an_older_daemon_still_parse() {
        // No live fields at all: every live column shows "-".
        let json = r#"[{"user":"alice","name":"laptop","public_key":"PUB","address":"10.200.0.2",
            "created_at":"2026-05-01T10:00:00Z","last_activation":null,
            "last_handshake":"2026-05-01T11:00:00Z"}]"#;
        let devices: Vec<DeviceInfo> = serde_json::from_str(json).expect("old answer");
        assert_eq!(devices[0].live, None);
        let now = humantime::parse_rfc3339("2026-05-01T12:00:00Z").expect("time");
        let text = device_table(&devices, now, KeyColumn::Show).render();
        assert!(
            text.ends_with("  -      -         1h 0m ago  -   -   PUB\n"),
            "{text}"
        );
        // And the new fields are left out of the JSON when absent.
        let back = serde_json::to_value(&devices[0]).expect("json");
        assert!(back.get("live").is_none() && back.get("endpoint").is_none());
    }

    #[tokio::test]
    async fn json_without_out_carries_the_rendered_file() {
        let server = FakeServer::start(vec![Canned::json(201, &config_answer("K"))]).await;
        let ctx = Ctx {
            client: Client::new(server.socket()),
            json: true,
            out: Out::capture(),
        };
        config(args(None, None), &ctx).await.expect("created");
        let printed: serde_json::Value =
            serde_json::from_str(&ctx.out.captured()).expect("pretty JSON");
        let file = printed["config"].as_str().expect("config field");
        assert!(file.starts_with("# gatehouse device config for alice/laptop\n"));
        assert!(file.contains("\nPrivateKey = "));
        assert_eq!(printed["interface_address"], "10.200.0.2/32");
    }
}
