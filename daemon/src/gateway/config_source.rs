//! Where the config comes from: the file, and the command-line overrides
//! that win over it on every (re)load.

use std::path::PathBuf;

use gatehouse_config::file::AUDIT_MIRROR_FILE as MIRROR_FILE;
use gatehouse_config::{Config, ConfigError};

/// The config file and the command-line settings that replace its keys.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub overrides: Overrides,
}

/// Command-line settings that replace keys of the file (for tests, demos and
/// running off the default paths).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub state_dir: Option<PathBuf>,
    pub admin_socket: Option<PathBuf>,
}

impl ConfigSource {
    /// Reads and validates the file, then applies the overrides.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(&self.path)?;
        self.overrides.apply(&mut config);
        Ok(config)
    }
}

impl Overrides {
    /// Applies the overrides to a loaded config.
    pub fn apply(&self, config: &mut Config) {
        let default_mirror = config.gateway.state_dir.join(MIRROR_FILE);
        if let Some(dir) = &self.state_dir {
            // The mirror follows the state dir unless the file placed it elsewhere.
            if config.audit.mirror == default_mirror {
                config.audit.mirror = dir.join(MIRROR_FILE);
            }
            config.gateway.state_dir.clone_from(dir);
        }
        if let Some(socket) = &self.admin_socket {
            config.admin.socket.clone_from(socket);
        }
    }
}
