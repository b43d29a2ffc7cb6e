//! Config reload (SIGHUP, `accessctl reload`): re-read the file, refuse an
//! invalid one (audited; the running config stays), swap a valid one in and
//! say which changed keys need a restart to take effect.

use std::sync::Arc;

use gatehouse_config::{Config, ConfigError};
use serde_json::json;

use super::Core;
use crate::audit::event::{Actor, Kind, Source, event};
use crate::store::StoreError;

/// The outcome of a reload that was accepted.
#[derive(Debug)]
pub struct Reloaded {
    pub config: Arc<Config>,
    /// Keys that changed but need a restart to take effect.
    pub restart_required: Vec<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("the reload could not be audited, so it was not applied: {0}")]
    Audit(#[from] StoreError),
}

impl Core {
    /// Re-reads the config file. An invalid file is refused (and the refusal
    /// audited); the running config stays. `actor` is who asked.
    pub async fn reload(&self, actor: Actor, source: Source) -> Result<Reloaded, ReloadError> {
        let loader = self.inner.source.clone();
        let loaded = tokio::task::spawn_blocking(move || loader.load())
            .await
            .unwrap_or_else(|join| {
                Err(ConfigError::Read {
                    path: self.inner.source.path.clone(),
                    source: std::io::Error::other(join),
                })
            });
        let path = self.inner.source.path.display().to_string();
        let config = match loaded {
            Ok(config) => config,
            Err(err) => {
                let detail =
                    json!({ "problems": err.problems().len().max(1), "error": err.to_string() });
                let refused = event(Kind::ConfigReloadFail, actor, source)
                    .on(path)
                    .detail(detail);
                self.store()
                    .write(move |w| w.audit(refused).map(drop))
                    .await?;
                tracing::warn!(error = %err, "config reload refused; the running config stays");
                return Err(err.into());
            }
        };
        let old = self.config();
        // Each key's reload behaviour is part of the config model.
        let restart_required = gatehouse_config::file::restart_required(&old, &config);
        let detail = json!({ "groups": config.groups.len(), "restart_required": restart_required });
        let accepted = event(Kind::ConfigReload, actor, source)
            .on(path)
            .detail(detail);
        self.store()
            .write(move |w| w.audit(accepted).map(drop))
            .await?;
        let config = Arc::new(config);
        self.inner.config.send_replace(config.clone());
        tracing::info!(
            groups = config.groups.len(),
            ?restart_required,
            "config reloaded"
        );
        Ok(Reloaded {
            config,
            restart_required,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use gatehouse_config::file::Reload;
    use gatehouse_config::file::reload_examples::{FULL, OTHER, with_value};

    use super::*;
    use crate::testing::TestGateway;

    /// Every key of the file, changed alone and reloaded: a live key is in
    /// the running config at once and not reported; a start-up key is
    /// reported as needing a restart. Either way the change is audited.
    #[tokio::test]
    async fn every_key_changed_and_reloaded_takes_effect_or_is_reported() {
        let state = tempfile::tempdir().unwrap();
        let base = FULL
            .replace(
                "\"/var/lib/gatehouse\"",
                &format!("{:?}", state.path().join("a")),
            )
            .replace(
                "\"/var/log/gatehouse/audit.jsonl\"",
                &format!("{:?}", state.path().join("audit.jsonl")),
            );
        // ssh.host_key_file must name a key that exists.
        let keys = state.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        crate::keys::ssh_host::load_or_create_host_key(&keys).unwrap();
        let base = base.replace(
            "\"/etc/gatehouse/ssh_host_ed25519_key\"",
            &format!("{:?}", keys.join(crate::keys::ssh_host::HOST_KEY_FILE)),
        );
        // So must ssh.ca_key_file and ssh.host_ca_key_file (certificates
        // are on in FULL): the CA keys made under `keys` are those files.
        use crate::keys::ssh_ca_key::{CaRole, Host, HostCa, User, UserCa};
        UserCa::load_or_create_local(&keys).unwrap();
        HostCa::load_or_create_local(&keys).unwrap();
        let base = base
            .replace(
                "\"/etc/gatehouse/ssh_user_ca_ed25519_key\"",
                &format!("{:?}", keys.join(User::LOCAL_FILE)),
            )
            .replace(
                "\"/etc/gatehouse/ssh_host_ca_ed25519_key\"",
                &format!("{:?}", keys.join(Host::LOCAL_FILE)),
            );
        // So must gateway.secrets_key_file.
        crate::keys::secrets::SecretsKey::load_or_create(&keys).unwrap();
        let base = base.replace(
            "\"/etc/gatehouse/secrets.key\"",
            &format!("{:?}", keys.join(crate::keys::secrets::KEY_FILE)),
        );
        for (key, value) in OTHER {
            let gw = TestGateway::new_as_written(&base).await;
            let changed = with_value(&base, key, value);
            gw.write_config(&changed);
            let reloaded = gw
                .core
                .reload(Actor::Admin { uid: Some(0) }, Source::Local)
                .await
                .unwrap_or_else(|err| panic!("{key}: {err}"));
            let wanted = Config::parse(&changed, "t.toml").unwrap();
            match gatehouse_config::file::reload_of(key).unwrap() {
                Reload::Live => {
                    assert!(
                        !reloaded.restart_required.contains(key),
                        "{key} is live but was reported: {:?}",
                        reloaded.restart_required
                    );
                    assert_eq!(*gw.core.config(), wanted, "{key} did not take effect");
                }
                Reload::Restart => assert!(
                    reloaded.restart_required.contains(key),
                    "{key} needs a restart but was not reported: {:?}",
                    reloaded.restart_required
                ),
            }
            let audited = gw.audit_records().await;
            let record = audited.last().unwrap();
            assert_eq!(record.kind, "config.reload", "{key}");
            let reported: Vec<&str> = record.detail["restart_required"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            assert_eq!(reported, reloaded.restart_required, "{key}");
        }
    }

    #[tokio::test]
    async fn an_invalid_file_is_refused_audited_and_the_running_config_stays() {
        let gw = TestGateway::new(crate::testing::CONFIG).await;
        let before = gw.core.config();
        gw.write_config("[vpn]\nmtu = \"big\"\n");
        let err = gw
            .core
            .reload(Actor::Signal("SIGHUP"), Source::Local)
            .await
            .unwrap_err();
        assert!(matches!(err, ReloadError::Invalid(_)), "{err}");
        assert_eq!(gw.core.config(), before);
        let records = gw.audit_records().await;
        let refused = records.last().unwrap();
        assert_eq!(
            (refused.kind.as_str(), refused.actor.as_str()),
            ("config.reload.fail", "signal:SIGHUP")
        );
    }
}
