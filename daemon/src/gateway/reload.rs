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
