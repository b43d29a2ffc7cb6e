//! Where each key comes from at start, before any listener opens:
//! 1. the file the config names (`gateway.secrets_key_file`,
//!    `vpn.private_key_file`, `ssh.host_key_file`, `ssh.ca_key_file`,
//!    `ssh.host_ca_key_file`): never created, never an AWS call;
//! 2. with `[aws]`, SSM ([`ParameterStore`]): its key wins and becomes the
//!    local copy; when it has none, the local key (made now if new) is
//!    stored there. SSM out of reach falls back on the local copy, unless
//!    there is none (a new key would break what the old one signed or
//!    sealed) or, for a failing call, `aws.apply_on_start` asks for AWS;
//! 3. else the key under `state_dir`, made 0600 on first start.
//!
//! Says whether a key was stored in SSM now ([`Resolved::stored_in_ssm`]);
//! the start-up audits that once the store is open.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use gatehouse_config::Config;
use russh::keys::PrivateKey;

use super::LocalKeyError;
use super::portal_tls::{self, SelfSigned};
use super::secrets::SecretsKey;
use super::ssh_ca_key::{CaKey, CaRole};
use super::ssh_host;
use super::ssm::{KeyOrigin, ParameterStore, SsmKey};
use super::wireguard::GatewayKey;

/// Why a key could not be had at start.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "cannot get {what} from SSM, and there is no local copy to fall back on ({why_not_new}): {source}"
    )]
    NoKey {
        what: &'static str,
        why_not_new: &'static str,
        source: Arc<dyn Error + Send + Sync>,
    },
    #[error(transparent)]
    Local(#[from] LocalKeyError),
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The keys' remote home (SSM), as the start found it.
pub enum Remote<'a, P> {
    /// No `[aws]`: no AWS call is ever made.
    Off,
    Up(&'a P),
    /// Out of reach: each key falls back on its local copy.
    Down(Arc<dyn Error + Send + Sync>),
}

/// A key, and whether it was stored in SSM just now.
pub struct Resolved<K> {
    pub key: K,
    pub stored_in_ssm: bool,
}

/// The key that seals the store's secrets, needed before the store opens:
/// `gateway.secrets_key_file` when set, else from SSM with `[aws]`, else
/// `state_dir/secrets.key`.
pub async fn secrets_key<P: ParameterStore>(
    config: &Config,
    remote: &Remote<'_, P>,
    state_dir: &Path,
) -> Result<Resolved<SecretsKey>, ResolveError> {
    if let Some(path) = config.gateway.secrets_key_file.clone() {
        let key = tokio::task::spawn_blocking(move || SecretsKey::load_file(&path))
            .await?
            .map_err(LocalKeyError::from)?;
        return Ok(Resolved::local(key));
    }
    ssm_or_local(config, remote, state_dir).await
}

/// The gateway's WireGuard key: `vpn.private_key_file` when set (the file
/// the gateways of a pair share), else from SSM with `[aws]`, else the
/// local key.
pub async fn wireguard_key<P: ParameterStore>(
    config: &Config,
    remote: &Remote<'_, P>,
    state_dir: &Path,
) -> Result<Resolved<GatewayKey>, ResolveError> {
    if let Some(file) = config.vpn.private_key_file.clone() {
        let key = tokio::task::spawn_blocking(move || GatewayKey::load_shared(&file))
            .await?
            .map_err(LocalKeyError::from)?;
        return Ok(Resolved::local(key));
    }
    ssm_or_local(config, remote, state_dir).await
}

/// The jump host's SSH host key: `ssh.host_key_file` when set (never
/// created), else from SSM with `[aws]`, else the local key.
pub async fn ssh_host_key<P: ParameterStore>(
    config: &Config,
    remote: &Remote<'_, P>,
    state_dir: &Path,
) -> Result<Resolved<PrivateKey>, ResolveError> {
    if let Some(file) = config.ssh.host_key_file.clone() {
        let dir = state_dir.to_path_buf();
        let key = tokio::task::spawn_blocking(move || ssh_host::load_host_key(Some(&file), &dir))
            .await?
            .map_err(LocalKeyError::from)?;
        return Ok(Resolved::local(key));
    }
    ssm_or_local(config, remote, state_dir).await
}

/// With `ssh.certificates`: an SSH CA key, the user CA's or the host
/// CA's: the file its setting names (`ssh.ca_key_file`,
/// `ssh.host_ca_key_file`; never created), else from SSM with `[aws]`,
/// else the local key (made now if new).
pub async fn ssh_ca<R: CaRole, P: ParameterStore>(
    config: &Config,
    remote: &Remote<'_, P>,
    state_dir: &Path,
) -> Result<Option<Resolved<CaKey<R>>>, ResolveError> {
    if !config.ssh.certificates {
        return Ok(None);
    }
    if let Some(file) = R::configured_file(config).map(Path::to_path_buf) {
        let ca = tokio::task::spawn_blocking(move || CaKey::<R>::load_file(&file))
            .await?
            .map_err(LocalKeyError::from)?;
        return Ok(Some(Resolved::local(ca)));
    }
    ssm_or_local(config, remote, state_dir).await.map(Some)
}

/// With `[aws]`, an enabled portal and no `portal.tls_cert`: the portal's
/// self-signed pair from SSM (or this gateway's, made now for `hosts` if
/// new, stored there), as the local copy the portal then serves.
pub async fn portal_certificate<P: ParameterStore>(
    config: &Config,
    remote: &Remote<'_, P>,
    hosts: Vec<String>,
) -> Result<Option<Resolved<SelfSigned>>, ResolveError> {
    if !config.portal.enabled || config.portal.tls.is_some() || config.aws.is_none() {
        return Ok(None);
    }
    let state_dir = config.gateway.state_dir.clone();
    let dir = state_dir.clone();
    tokio::task::spawn_blocking(move || portal_tls::ensure_self_signed(&dir, hosts))
        .await?
        .map_err(LocalKeyError::from)?;
    ssm_or_local(config, remote, &state_dir).await.map(Some)
}

impl<K> Resolved<K> {
    fn local(key: K) -> Self {
        Self {
            key,
            stored_in_ssm: false,
        }
    }
}

/// `K` from SSM (stored there when missing), or its local copy when AWS
/// is off, or out of reach and a copy exists.
async fn ssm_or_local<K: SsmKey, P: ParameterStore>(
    config: &Config,
    remote: &Remote<'_, P>,
    state_dir: &Path,
) -> Result<Resolved<K>, ResolveError> {
    let local = || {
        let dir = state_dir.to_path_buf();
        tokio::task::spawn_blocking(move || K::load_or_create_local(&dir))
    };
    let has_local_copy = state_dir.join(K::LOCAL_FILE).exists();
    let no_key = |source| ResolveError::NoKey {
        what: K::WHAT,
        why_not_new: K::WHY_NOT_NEW,
        source,
    };
    let store = match remote {
        Remote::Off => return Ok(Resolved::local(local().await??)),
        Remote::Up(store) => store,
        Remote::Down(err) if has_local_copy => {
            tracing::warn!(error = %err, "AWS unreachable at start; running with the local copy of {}", K::WHAT);
            return Ok(Resolved::local(local().await??));
        }
        Remote::Down(err) => return Err(no_key(err.clone())),
    };
    let apply_on_start = config.aws.as_ref().is_some_and(|aws| aws.apply_on_start);
    match store
        .load_or_store::<K>(&config.gateway.name, state_dir)
        .await
    {
        Ok((key, origin)) => Ok(Resolved {
            key,
            stored_in_ssm: origin == KeyOrigin::StoredInSsm,
        }),
        Err(err) if has_local_copy && !apply_on_start => {
            tracing::warn!(error = %err, "cannot use SSM for {}; running with the local copy", K::WHAT);
            Ok(Resolved::local(local().await??))
        }
        Err(err) => Err(no_key(Arc::new(err))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// SSM in memory: a parameter per name, or every call failing.
    #[derive(Default)]
    struct FakeSsm {
        values: Mutex<HashMap<String, String>>,
        failing: bool,
    }

    impl ParameterStore for FakeSsm {
        type Error = std::io::Error;

        async fn load_or_store<K: SsmKey>(
            &self,
            gateway: &str,
            state_dir: &Path,
        ) -> Result<(K, KeyOrigin), std::io::Error> {
            if self.failing {
                return Err(std::io::Error::other("SSM said no"));
            }
            let name = K::parameter_name(gateway);
            let held = self.values.lock().unwrap().get(&name).cloned();
            if let Some(text) = held {
                let key = K::from_parameter(&text).unwrap();
                key.store_local(state_dir).unwrap();
                return Ok((key, KeyOrigin::Ssm));
            }
            let local = K::load_or_create_local(state_dir).unwrap();
            self.values
                .lock()
                .unwrap()
                .insert(name, local.parameter_value());
            Ok((local, KeyOrigin::StoredInSsm))
        }
    }

    /// A gateway's config, with `[aws]` when `aws`; the state dir is
    /// handed to each resolution as it is at start.
    fn config(aws: bool, apply_on_start: bool) -> Config {
        let mut text = String::from(
            "[gateway]\nname = \"gw\"\npublic_endpoint = \"vpn.example.org\"\n\
             [vpn]\npool = \"10.200.0.0/24\"\n\
             [[group]]\nname = \"research\"\nsubnets = [\"10.0.3.0/24\"]\n",
        );
        if aws {
            text.push_str(&format!(
                "[aws]\nregion = \"eu-west-1\"\napply_on_start = {apply_on_start}\n"
            ));
        }
        Config::parse(&text, "t.toml").unwrap()
    }

    fn public(key: &GatewayKey) -> String {
        key.public_base64()
    }

    #[tokio::test]
    async fn without_aws_the_key_is_the_one_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(false, false);
        let off = Remote::<FakeSsm>::Off;
        let first = wireguard_key(&config, &off, dir.path()).await.unwrap();
        assert!(!first.stored_in_ssm);
        let again = wireguard_key(&config, &off, dir.path()).await.unwrap();
        assert_eq!(public(&first.key), public(&again.key));
    }

    /// The first gateway stores its key; a replaced instance (a new state
    /// dir) gets the same one from SSM, and its local copy becomes it.
    #[tokio::test]
    async fn ssm_holds_the_first_key_and_every_later_start_gets_it() {
        let ssm = FakeSsm::default();
        let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = wireguard_key(&config(true, false), &Remote::Up(&ssm), first_dir.path())
            .await
            .unwrap();
        assert!(first.stored_in_ssm);
        let second = wireguard_key(&config(true, false), &Remote::Up(&ssm), second_dir.path())
            .await
            .unwrap();
        assert!(!second.stored_in_ssm);
        assert_eq!(public(&second.key), public(&first.key));
        let local = GatewayKey::load_or_create(second_dir.path()).unwrap();
        assert_eq!(public(&local), public(&first.key));
    }

    /// SSM out of reach: the local copy carries the start; without one, no
    /// new key is made (it would break every device config).
    #[tokio::test]
    async fn out_of_reach_falls_back_on_the_local_copy_only() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(true, false);
        let down = Remote::<FakeSsm>::Down(Arc::new(std::io::Error::other("no route")));
        let err = wireguard_key(&config, &down, dir.path())
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, ResolveError::NoKey { .. })
                && err.to_string().contains("no local copy")
                && err.to_string().contains("no route"),
            "{err}"
        );
        assert!(!dir.path().join(super::super::wireguard::KEY_FILE).exists());
        let made = GatewayKey::load_or_create(dir.path()).unwrap();
        let resolved = wireguard_key(&config, &down, dir.path()).await.unwrap();
        assert_eq!(public(&resolved.key), public(&made));
    }

    /// `ssh.ca_key_file` wins over SSM, with no AWS call: both gateways of
    /// a pair without `[aws]` sign with the file they were given.
    #[tokio::test]
    async fn a_ca_key_file_is_the_user_ca_and_ssm_is_not_asked() {
        let dir = tempfile::tempdir().unwrap();
        let given = super::super::ssh_ca_key::UserCa::load_or_create_local(dir.path()).unwrap();
        let file = dir.path().join("shared_ca_key");
        super::super::private_file::PrivateFile::new(&file)
            .create_new(
                ssh_host::host_key_to_openssh(given.private_key())
                    .unwrap()
                    .as_bytes(),
            )
            .unwrap();
        let mut config = config(true, true);
        config.ssh.certificates = true;
        config.ssh.ca_key_file = Some(file);
        let failing = FakeSsm {
            failing: true,
            ..FakeSsm::default()
        };
        let other_dir = tempfile::tempdir().unwrap();
        use super::super::ssh_ca_key::User;
        let resolved = ssh_ca::<User, _>(&config, &Remote::Up(&failing), other_dir.path())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resolved.key.fingerprint(), given.fingerprint());
        assert!(!resolved.stored_in_ssm);
        assert!(
            !other_dir.path().join(User::LOCAL_FILE).exists(),
            "no local CA key is made"
        );
    }

    /// A failing SSM call: the local copy, unless `aws.apply_on_start`
    /// asks for AWS.
    #[tokio::test]
    async fn a_failing_call_uses_the_local_copy_unless_apply_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let failing = FakeSsm {
            failing: true,
            ..FakeSsm::default()
        };
        let made = SecretsKey::load_or_create(dir.path()).unwrap();
        let up = Remote::Up(&failing);
        let resolved = secrets_key(&config(true, false), &up, dir.path())
            .await
            .unwrap();
        assert_eq!(resolved.key.fingerprint(), made.fingerprint());
        let err = secrets_key(&config(true, true), &up, dir.path())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("SSM said no"), "{err}");
    }
}
