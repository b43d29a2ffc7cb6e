//! What the gateway knows about its AWS footprint that other parts need:
//! the elastic IP last seen (kept in the state dir, so `public_endpoint =
//! "auto"` works before the first apply of a new run), the lock that
//! keeps two applies from interleaving, and the records of AWS changes the
//! store refused, kept to be written later. The provisioner (`crate::aws`)
//! writes it; device configs and links read it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use crate::store::unwritten::Unwritten;

/// File under `state_dir` remembering the elastic IP across restarts.
pub const ELASTIC_IP_FILE: &str = "aws-elastic-ip";

/// One apply at a time, and the elastic IP last seen.
pub struct AwsState {
    apply: tokio::sync::Mutex<()>,
    unwritten: Unwritten,
    elastic_ip: RwLock<Option<IpAddr>>,
    file: PathBuf,
}

impl AwsState {
    /// Reads the remembered elastic IP, if any, from `state_dir`.
    pub fn load(state_dir: &Path) -> Self {
        let file = state_dir.join(ELASTIC_IP_FILE);
        let remembered = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        Self {
            apply: tokio::sync::Mutex::new(()),
            unwritten: Unwritten::new("AWS"),
            elastic_ip: RwLock::new(remembered),
            file,
        }
    }

    /// Held for the length of one plan+apply, so two applies never interleave.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.apply.lock().await
    }

    /// `aws.change` and `aws.change.fail` records the store refused: AWS
    /// made (or refused) the change all the same.
    pub fn unwritten(&self) -> &Unwritten {
        &self.unwritten
    }

    pub fn elastic_ip(&self) -> Option<IpAddr> {
        *self
            .elastic_ip
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the elastic IP AWS reported, and remembers it on disk.
    pub fn set_elastic_ip(&self, ip: Option<IpAddr>) {
        let mut slot = self
            .elastic_ip
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if *slot == ip {
            return;
        }
        *slot = ip;
        let written = match ip {
            Some(ip) => std::fs::write(&self.file, format!("{ip}\n")),
            None => std::fs::remove_file(&self.file).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
        };
        if let Err(err) = written {
            tracing::warn!(path = %self.file.display(), error = %err, "cannot remember the elastic IP");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_elastic_ip_is_remembered_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let facts = AwsState::load(dir.path());
        assert_eq!(
            facts.elastic_ip(),
            None,
            "unknown before the first describe"
        );
        facts.set_elastic_ip(Some("198.51.100.9".parse().unwrap()));
        let restarted = AwsState::load(dir.path());
        assert_eq!(restarted.elastic_ip(), facts.elastic_ip());
        restarted.set_elastic_ip(None);
        assert_eq!(
            AwsState::load(dir.path()).elastic_ip(),
            None,
            "a released address is forgotten"
        );
    }
}
