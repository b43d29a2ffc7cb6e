//! `accessctl backup FILE`: a consistent online copy of the gateway's
//! database (users, devices, keys, tokens, the whole audit log), written to
//! FILE with mode 0600. `accessd restore FILE` puts it back.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;
use gatehouse_config::api::{BACKUP_INFO_HEADER, BackupInfo};

use crate::Ctx;
use crate::client::ClientError;
use crate::output::{self, OutputError};

pub const LONG_ABOUT: &str = "Write a consistent copy of the gateway's database to FILE.\n\n\
    The copy is taken while accessd runs and holds everything it stores: users, \
    groups, SSH keys, devices (public keys and addresses), enrollment token hashes, \
    password hashes and TOTP secrets, and the whole audit log, whose last record is \
    the chain head the backup restores. FILE gets mode 0600: keep it as secret as \
    the state directory. The backup is audited (admin.backup).\n\n\
    Restore (accessd stopped; what is replaced is kept beside it as *.replaced-<time>):\n  \
    systemctl stop accessd\n  \
    accessd restore FILE\n  \
    systemctl start accessd\n  \
    accessctl audit verify\n\n\
    Example:\n  accessctl backup /var/backups/gatehouse-$(date +%F).db";

/// `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the backup (a new file unless --force).
    pub file: PathBuf,
    /// Replace FILE when it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Output(#[from] OutputError),
    #[error("{} exists: choose a new file, or pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error(
        "accessd sent no readable {BACKUP_INFO_HEADER} header: is it older than this accessctl?"
    )]
    NoInfo,
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub async fn run(args: BackupArgs, ctx: &Ctx) -> Result<(), BackupError> {
    if args.file.exists() && !args.force {
        return Err(BackupError::Exists(args.file));
    }
    let (headers, bytes) = ctx.client.download("/v1/backup").await?;
    let info: BackupInfo = headers
        .get(BACKUP_INFO_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or(BackupError::NoInfo)?;
    write_private(&args.file, &bytes).map_err(|source| BackupError::Write {
        path: args.file.clone(),
        source,
    })?;
    if ctx.json {
        let mut value = serde_json::to_value(&info).unwrap_or_default();
        value["file"] = args.file.display().to_string().into();
        ctx.out.emit_json(&value)?;
    } else {
        ctx.out.emit(&render(&args.file, &info))?;
    }
    Ok(())
}

fn render(file: &Path, info: &BackupInfo) -> String {
    let head = match (info.audit_head_seq, &info.audit_head_hash) {
        (Some(seq), Some(hash)) => format!("seq {seq}, hash {}", output::truncate(hash, 16)),
        _ => "empty".to_owned(),
    };
    format!(
        "backup written to {} ({}, mode 0600)\n  \
         {} user(s), {} device(s), {} audit record(s); audit chain head {head}\n\
         restore it with accessd stopped: accessd restore {}\n",
        file.display(),
        output::human_bytes(info.bytes),
        info.users,
        info.devices,
        info.audit_records,
        file.display(),
    )
}

/// Writes `bytes` to a new temporary file beside `path` (mode 0600), syncs
/// it and renames it over `path`: a crash leaves no half-written backup.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_file_the_counts_and_the_restore_command() {
        let info = BackupInfo {
            created_at: "2026-11-25T15:00:00Z".into(),
            schema_version: 2,
            users: 3,
            devices: 2,
            audit_records: 17,
            audit_head_seq: Some(17),
            audit_head_hash: Some("0123456789abcdef0123".into()),
            bytes: 40_960,
        };
        let text = render(Path::new("/tmp/gw.db"), &info);
        assert!(text.starts_with("backup written to /tmp/gw.db"), "{text}");
        assert!(
            text.contains("3 user(s), 2 device(s), 17 audit record(s)"),
            "{text}"
        );
        assert!(text.contains("accessd restore /tmp/gw.db"), "{text}");
    }
}
