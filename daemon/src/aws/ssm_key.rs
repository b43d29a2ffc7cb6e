//! The SSM calls behind the identity keys' home in Parameter Store
//! ([`crate::keys::ssm`] says what each key is as a parameter): read and
//! decrypt a key, store one as a SecureString. [`Session`] is the
//! [`ParameterStore`] the keys' resolution at start asks.
//!
//! Each key is read at start when present and written to its 0600 local
//! copy under `state_dir`; when missing, the local key (made now if new) is
//! stored there. A key is never logged: only its public half or fingerprint.

use std::path::Path;

use aws_sdk_ssm::types::{ParameterType, Tag};

use super::Session;
use super::desired::TAG_GATEWAY;
use super::errors::{AwsError, classify};
use crate::keys::ssm::{KeyOrigin, ParameterStore, SsmKey};

impl ParameterStore for Session {
    type Error = AwsError;

    fn load_or_store<K: SsmKey>(
        &self,
        gateway: &str,
        state_dir: &Path,
    ) -> impl Future<Output = Result<(K, KeyOrigin), AwsError>> + Send {
        load_or_store::<K>(self, gateway, state_dir)
    }
}

/// The key accessd runs with when `[aws]` is configured.
async fn load_or_store<K: SsmKey>(
    session: &Session,
    gateway: &str,
    state_dir: &Path,
) -> Result<(K, KeyOrigin), AwsError> {
    let name = K::parameter_name(gateway);
    // Two rounds: another instance may store its key between our read and write.
    for _ in 0..2 {
        if let Some(key) = get::<K>(session, &name).await? {
            // An unreadable local copy is replaced by SSM's.
            let local = K::load_local(state_dir).ok().flatten();
            if local.as_ref().map(K::label) != Some(key.label()) {
                if let Some(local) = &local {
                    tracing::warn!(
                        parameter = %name,
                        local = %local.label(),
                        ssm = %key.label(),
                        "the local copy of {} differs from the one in SSM; SSM wins",
                        K::WHAT
                    );
                }
                key.store_local(state_dir)?;
            }
            return Ok((key, KeyOrigin::Ssm));
        }
        let dir = state_dir.to_path_buf();
        let local = tokio::task::spawn_blocking(move || K::load_or_create_local(&dir))
            .await
            .map_err(|join| AwsError::Other {
                action: "ssm:PutParameter",
                source: Box::new(join),
            })??;
        match put(session, &name, gateway, &local, false).await {
            Ok(()) => {
                tracing::info!(parameter = %name, key = %local.label(), "stored {} in SSM", K::WHAT);
                return Ok((local, KeyOrigin::StoredInSsm));
            }
            Err(AwsError::Service { code, .. }) if code == "ParameterAlreadyExists" => continue,
            Err(err) => return Err(err),
        }
    }
    Err(AwsError::Incomplete {
        action: "ssm:GetParameter",
        what: "a stable parameter (it appeared and vanished while starting)",
    })
}

/// Reads and decrypts the key; `None` when there is no parameter.
async fn get<K: SsmKey>(session: &Session, name: &str) -> Result<Option<K>, AwsError> {
    const ACTION: &str = "ssm:GetParameter";
    let out = match session
        .ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
    {
        Ok(out) => out,
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_parameter_not_found()) =>
        {
            return Ok(None);
        }
        Err(err) => return Err(classify(ACTION, err)),
    };
    let value = out.parameter().and_then(|p| p.value()).unwrap_or_default();
    K::from_parameter(value.trim())
        .map(Some)
        .ok_or_else(|| AwsError::MalformedKey {
            name: name.to_string(),
            what: K::WHAT,
            remedy: K::IF_MALFORMED,
        })
}

/// Stores `key` as a SecureString (`overwrite`: replace what is there).
pub async fn put<K: SsmKey>(
    session: &Session,
    name: &str,
    gateway: &str,
    key: &K,
    overwrite: bool,
) -> Result<(), AwsError> {
    const ACTION: &str = "ssm:PutParameter";
    let mut request = session
        .ssm
        .put_parameter()
        .name(name)
        .description(format!(
            "gatehouse {gateway}: {} ({})",
            K::WHAT,
            key.label()
        ))
        .value(key.parameter_value())
        .r#type(ParameterType::SecureString)
        .overwrite(overwrite);
    // AWS refuses tags together with overwrite.
    if !overwrite {
        request = request.tags(
            Tag::builder()
                .key(TAG_GATEWAY)
                .value(gateway)
                .build()
                .map_err(|e| AwsError::Other {
                    action: ACTION,
                    source: Box::new(e),
                })?,
        );
    }
    request.send().await.map_err(|e| classify(ACTION, e))?;
    Ok(())
}
