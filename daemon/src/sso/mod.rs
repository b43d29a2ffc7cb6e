//! Single sign-on with the team's OpenID Connect provider (`[oidc]`).
//!
//! - [`provider`]: the provider as the portal talks to it: discovery and
//!   JWKS, the authorization URL (PKCE S256, `state`, `nonce`), the code
//!   exchange and the ID token's checks (the `openidconnect` crate).
//! - [`spawn_provider`]: makes the provider at start-up and keeps trying discovery
//!   in the background until it succeeds, so an issuer out of reach at
//!   start never stops the gateway: the login page says SSO is unavailable
//!   and the log says why.
//!
//! Who a verified login is (identity link, groups, provisioning) is the
//! access service's (`access::sso`); the portal's `/oidc/*` handlers parse,
//! call and render (`portal::sso_pages`).

pub mod provider;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use provider::{Begun, Provider, ProviderRefusal, ProviderStatus, SetupError, Verified};

/// How often discovery is retried while it has not succeeded.
const RETRY: Duration = provider::REFRESH_GAP;

/// The provider of `[oidc]` (`None` without it), with its background
/// discovery owned by `tracker` and stopped by `shutdown`. `portal_url` is
/// the portal's public base URL: the redirect URI is
/// `<portal_url>/oidc/callback`.
pub async fn spawn_provider(
    config: &gatehouse_config::Config,
    portal_url: &str,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<Option<Arc<Provider>>, SetupError> {
    let Some(oidc) = config.oidc.clone() else {
        return Ok(None);
    };
    if !config.portal.enabled {
        tracing::warn!("[oidc] is set but the portal is off: nobody can sign in with SSO");
        return Ok(None);
    }
    let redirect = format!("{}/oidc/callback", portal_url.trim_end_matches('/'));
    let provider = tokio::task::spawn_blocking(move || Provider::new(&oidc, &redirect))
        .await
        .map_err(|e| SetupError::Http(format!("start-up task failed: {e}")))??;
    let provider = Arc::new(provider);
    let background = provider.clone();
    tracker.spawn(async move {
        loop {
            if background.refresh().await.is_ok() {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    });
    Ok(Some(provider))
}
