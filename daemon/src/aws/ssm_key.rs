//! The gateway's WireGuard key in SSM Parameter Store, as the SecureString
//! `/gatehouse/<name>/wireguard-key`: read at start when present (a replaced
//! instance keeps its public key, so every device config keeps working),
//! created from the local key when missing. The key is never logged.

use std::path::Path;

use aws_sdk_ssm::types::{ParameterType, Tag};

use super::Session;
use super::desired::{TAG_GATEWAY, ssm_parameter_name};
use super::errors::{AwsError, classify};
use crate::wg_key::GatewayKey;

/// Where the running key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// SSM held it (the local copy now matches).
    Ssm,
    /// SSM had none: the local key (made now if new) was stored there.
    StoredInSsm,
}

/// The key accessd runs with when `[aws]` is configured.
pub async fn load_or_store(
    session: &Session,
    gateway: &str,
    state_dir: &Path,
) -> Result<(GatewayKey, KeyOrigin), AwsError> {
    let name = ssm_parameter_name(gateway);
    // Two rounds: another instance may store its key between our read and write.
    for _ in 0..2 {
        if let Some(key) = get(session, &name).await? {
            let local = state_dir
                .join(crate::wg_key::KEY_FILE)
                .exists()
                .then(|| GatewayKey::load_or_create(state_dir).ok())
                .flatten();
            if local.as_ref().map(GatewayKey::public_base64) != Some(key.public_base64()) {
                if let Some(local) = &local {
                    tracing::warn!(
                        parameter = %name,
                        local_public_key = %local.public_base64(),
                        ssm_public_key = %key.public_base64(),
                        "the local WireGuard key differs from the one in SSM; SSM wins"
                    );
                }
                key.store(state_dir)?;
            }
            return Ok((key, KeyOrigin::Ssm));
        }
        let dir = state_dir.to_path_buf();
        let local = tokio::task::spawn_blocking(move || GatewayKey::load_or_create(&dir))
            .await
            .map_err(|join| AwsError::Other {
                action: "ssm:PutParameter",
                source: Box::new(join),
            })??;
        match put(session, &name, gateway, &local, false).await {
            Ok(()) => {
                tracing::info!(parameter = %name, public_key = %local.public_base64(), "stored the gateway's WireGuard key in SSM");
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
async fn get(session: &Session, name: &str) -> Result<Option<GatewayKey>, AwsError> {
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
    GatewayKey::from_base64(value.trim())
        .map(Some)
        .ok_or_else(|| AwsError::MalformedKey {
            name: name.to_string(),
        })
}

/// Stores `key` as a SecureString (`overwrite`: replace what is there).
pub async fn put(
    session: &Session,
    name: &str,
    gateway: &str,
    key: &GatewayKey,
    overwrite: bool,
) -> Result<(), AwsError> {
    const ACTION: &str = "ssm:PutParameter";
    let mut request = session
        .ssm
        .put_parameter()
        .name(name)
        .description(format!(
            "gatehouse {gateway}: the gateway's WireGuard private key (public {})",
            key.public_base64()
        ))
        .value(key.private_base64())
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
