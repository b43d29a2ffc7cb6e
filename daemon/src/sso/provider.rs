//! The team's OpenID provider as the portal talks to it (`[oidc]`), with the
//! `openidconnect` crate: discovery and its JWKS (cached; fetched again,
//! at most every [`REFRESH_GAP`], when a token names a key it does not
//! know), the authorization URL with PKCE (S256), `state` and `nonce`, and
//! the code exchange with the ID token fully checked: its signature against
//! an allow-list of algorithms (never `none`), `iss`, `aud` and `azp`, `exp`,
//! `iat` and `nbf` with [`SKEW`], and the `nonce`.
//!
//! The portal is the only network client of the provider: every request is
//! bounded ([`CONNECT_TIMEOUT`], [`REQUEST_TIMEOUT`]) and follows no
//! redirect. Never logs a code, a token or the client secret.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields,
    IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError, StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};

/// How long a connection to the provider may take to open ...
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// ... and a whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Discovery (and the JWKS with it) is fetched again at most this often.
pub const REFRESH_GAP: Duration = Duration::from_secs(30);
/// Clock skew allowed on `exp`, `iat` and `nbf`.
pub const SKEW: Duration = Duration::from_secs(60);
/// An ID token issued longer ago than this is refused.
const MAX_TOKEN_AGE: Duration = Duration::from_secs(10 * 60);

/// Claims past the standard ones (the groups claim, `azp` and `nbf` are
/// read from here).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for ExtraClaims {}

type IdFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<IdFields, CoreTokenType>;
type OidcClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The signature algorithms an ID token may use; `none` and the HMAC ones
/// (keyed with the client secret) never.
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Why the provider could not be set up (at start: the gateway runs on
/// without SSO and says why).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot use oidc.client_secret_file {path}: {reason}")]
    Secret {
        path: std::path::PathBuf,
        reason: crate::keys::private_file::PrivateFileError,
    },
    #[error("cannot read oidc.ca_file {path}: {reason}")]
    Ca {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{what} is not a URL: {reason}")]
    Url { what: &'static str, reason: String },
    #[error("cannot build the HTTPS client for the provider: {0}")]
    Http(String),
}

/// Why a login through the provider failed. [`ProviderRefusal::reason`] is what
/// the audit record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderRefusal {
    /// The provider's discovery or JWKS cannot be had now.
    Unavailable(String),
    /// The provider answered the login with an error (or a code that does
    /// not exchange: reused, expired, for another client).
    ProviderError(String),
    Signature(String),
    Issuer(String),
    Audience(String),
    Expired(String),
    Nonce(String),
    /// A claim the gateway needs is missing or malformed.
    Claims(String),
}

impl ProviderRefusal {
    pub fn reason(&self) -> &'static str {
        match self {
            ProviderRefusal::Unavailable(_) => "provider_unavailable",
            ProviderRefusal::ProviderError(_) => "provider_error",
            ProviderRefusal::Signature(_) => "signature",
            ProviderRefusal::Issuer(_) => "issuer",
            ProviderRefusal::Audience(_) => "audience",
            ProviderRefusal::Expired(_) => "expired",
            ProviderRefusal::Nonce(_) => "nonce",
            ProviderRefusal::Claims(_) => "claims",
        }
    }

    /// What happened, for the log and the audit record's detail (never a
    /// token or code).
    pub fn detail(&self) -> &str {
        match self {
            ProviderRefusal::Unavailable(d)
            | ProviderRefusal::ProviderError(d)
            | ProviderRefusal::Signature(d)
            | ProviderRefusal::Issuer(d)
            | ProviderRefusal::Audience(d)
            | ProviderRefusal::Expired(d)
            | ProviderRefusal::Nonce(d)
            | ProviderRefusal::Claims(d) => d,
        }
    }
}

/// A login about to be sent to the provider: the URL to redirect the
/// browser to, and what its callback must find again.
pub struct Begun {
    pub url: String,
    pub state: String,
    pub nonce: String,
    /// The PKCE verifier. Never log it.
    pub verifier: String,
}

/// A login the provider vouched for, every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    /// The token's `email_verified`, when it says.
    pub email_verified: Option<bool>,
    /// The value of `oidc.username_claim`, if the token has it.
    pub username: Option<String>,
    /// The values of `oidc.groups_claim` (none when absent).
    pub groups: Vec<String>,
}

/// What `accessctl status` shows of the provider.
#[derive(Debug, Clone, Default)]
pub struct ProviderStatus {
    pub last_discovery: Option<SystemTime>,
    pub last_error: Option<String>,
}

struct Discovered {
    client: OidcClient,
    at: Instant,
}

impl std::fmt::Debug for Provider {
    /// The issuer and client id only: never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The provider, discovered lazily and kept.
pub struct Provider {
    issuer: String,
    client_id: String,
    secret: Option<ClientSecret>,
    redirect: RedirectUrl,
    http: reqwest::Client,
    discovered: tokio::sync::RwLock<Option<Discovered>>,
    /// When discovery was last tried (the refresh gate).
    last_try: tokio::sync::Mutex<Option<Instant>>,
    status: Mutex<ProviderStatus>,
}

impl Provider {
    /// Reads the secret and CA files and builds the HTTPS client; no
    /// network yet. `redirect` is `<portal url>/oidc/callback`. Blocking
    /// (reads files).
    pub fn new(
        config: &gatehouse_config::file::OidcConfig,
        redirect: &str,
    ) -> Result<Provider, SetupError> {
        let secret = config
            .client_secret_file
            .as_deref()
            .map(read_secret)
            .transpose()?;
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .https_only(!config.issuer.starts_with("http://"));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| SetupError::Ca {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let roots =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SetupError::Ca {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if roots.is_empty() {
                return Err(SetupError::Ca {
                    path: path.clone(),
                    reason: "no PEM certificate in it".into(),
                });
            }
            for root in roots {
                http = http.add_root_certificate(root);
            }
        }
        let http = http.build().map_err(|e| SetupError::Http(e.to_string()))?;
        let redirect = RedirectUrl::new(redirect.to_string()).map_err(|e| SetupError::Url {
            what: "the redirect URI (<portal url>/oidc/callback)",
            reason: e.to_string(),
        })?;
        IssuerUrl::new(config.issuer.clone()).map_err(|e| SetupError::Url {
            what: "oidc.issuer",
            reason: e.to_string(),
        })?;
        Ok(Provider {
            issuer: config.issuer.clone(),
            client_id: config.client_id.clone(),
            secret,
            redirect,
            http,
            discovered: tokio::sync::RwLock::new(None),
            last_try: tokio::sync::Mutex::new(None),
            status: Mutex::new(ProviderStatus::default()),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn status(&self) -> ProviderStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Fetches discovery and the JWKS, unless they were tried less than
    /// [`REFRESH_GAP`] ago: the gate keeps a flood of logins (or of tokens
    /// naming unknown keys) from becoming a flood of requests to the
    /// provider.
    pub async fn refresh(&self) -> Result<(), ProviderRefusal> {
        // Held across the attempt: a caller arriving meanwhile waits for it
        // (bounded by the request timeouts) instead of failing early.
        let mut last = self.last_try.lock().await;
        if last.is_some_and(|t| t.elapsed() < REFRESH_GAP) {
            return match self.discovered.read().await.is_some() {
                true => Ok(()),
                false => Err(ProviderRefusal::Unavailable(
                    self.status()
                        .last_error
                        .unwrap_or_else(|| "discovery has not succeeded yet".into()),
                )),
            };
        }
        *last = Some(Instant::now());
        let issuer = IssuerUrl::new(self.issuer.clone())
            .map_err(|e| ProviderRefusal::Unavailable(e.to_string()))?;
        let found = CoreProviderMetadata::discover_async(issuer, &self.http).await;
        match found {
            Ok(metadata) => {
                let client = OidcClient::from_provider_metadata(
                    metadata,
                    ClientId::new(self.client_id.clone()),
                    self.secret.clone(),
                )
                .set_redirect_uri(self.redirect.clone());
                *self.discovered.write().await = Some(Discovered {
                    client,
                    at: Instant::now(),
                });
                if let Ok(mut status) = self.status.lock() {
                    status.last_discovery = Some(SystemTime::now());
                    status.last_error = None;
                }
                tracing::info!(issuer = %self.issuer, "OpenID provider discovered");
                Ok(())
            }
            Err(err) => {
                let said = format!("discovery of {} failed: {}", self.issuer, error_chain(&err));
                tracing::warn!(issuer = %self.issuer, error = %said, "SSO is unavailable");
                if let Ok(mut status) = self.status.lock() {
                    status.last_error = Some(said.clone());
                }
                Err(ProviderRefusal::Unavailable(said))
            }
        }
    }

    /// Whether discovery has succeeded (the login button is offered).
    pub async fn available(&self) -> bool {
        if self.discovered.read().await.is_some() {
            return true;
        }
        self.refresh().await.is_ok()
    }

    /// The authorization URL for a new login (code flow, PKCE S256).
    pub async fn begin(&self, scopes: &[String]) -> Result<Begun, ProviderRefusal> {
        if self.discovered.read().await.is_none() {
            self.refresh().await?;
        }
        let guard = self.discovered.read().await;
        let Some(found) = guard.as_ref() else {
            return Err(ProviderRefusal::Unavailable(
                "discovery has not succeeded".into(),
            ));
        };
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = found.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(Begun {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges `code` and checks the ID token; reads `username_claim` and
    /// `groups_claim` from it.
    pub async fn finish(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
        username_claim: &str,
        groups_claim: &str,
    ) -> Result<Verified, ProviderRefusal> {
        let tokens = {
            let guard = self.discovered.read().await;
            let Some(found) = guard.as_ref() else {
                return Err(ProviderRefusal::Unavailable(
                    "discovery has not succeeded".into(),
                ));
            };
            let request = found
                .client
                .exchange_code(AuthorizationCode::new(code.to_string()))
                .map_err(|e| {
                    ProviderRefusal::Unavailable(format!("the provider has no token endpoint: {e}"))
                })?
                .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()));
            request
                .request_async(&self.http)
                .await
                .map_err(|e| match e {
                    RequestTokenError::ServerResponse(answer) => ProviderRefusal::ProviderError(
                        format!("the token endpoint refused the code: {}", answer.error()),
                    ),
                    other => ProviderRefusal::ProviderError(format!(
                        "the token endpoint failed: {}",
                        error_chain(&other)
                    )),
                })?
        };
        let Some(id_token) = tokens.id_token().cloned() else {
            return Err(ProviderRefusal::Claims(
                "the provider sent no ID token".into(),
            ));
        };
        let nonce = Nonce::new(nonce.to_string());
        // A key the cached JWKS does not know: fetch it again (gated), once.
        let verified = match self.check(&id_token, &nonce).await {
            Err(ProviderRefusal::Signature(why)) if why.contains("No matching key") => {
                let stale = self
                    .discovered
                    .read()
                    .await
                    .as_ref()
                    .is_some_and(|d| d.at.elapsed() >= REFRESH_GAP);
                if stale {
                    self.refresh().await?;
                    self.check(&id_token, &nonce).await
                } else {
                    Err(ProviderRefusal::Signature(why))
                }
            }
            other => other,
        }?;
        let (issuer, subject, email, claims) = verified;
        let username = match username_claim {
            "email" => email.clone(),
            "sub" => Some(subject.clone()),
            other => claims
                .standard(other)
                .or_else(|| text_claim(&claims.extra, other)),
        };
        Ok(Verified {
            issuer,
            subject,
            email,
            email_verified: claims.email_verified,
            username,
            groups: list_claim(&claims.extra, groups_claim),
        })
    }

    async fn check(
        &self,
        id_token: &openidconnect::IdToken<
            ExtraClaims,
            CoreGenderClaim,
            CoreJweContentEncryptionAlgorithm,
            CoreJwsSigningAlgorithm,
        >,
        nonce: &Nonce,
    ) -> Result<(String, String, Option<String>, ReadClaims), ProviderRefusal> {
        let guard = self.discovered.read().await;
        let Some(found) = guard.as_ref() else {
            return Err(ProviderRefusal::Unavailable(
                "discovery has not succeeded".into(),
            ));
        };
        let now = chrono::Utc::now();
        let skew = chrono::Duration::from_std(SKEW).unwrap_or_default();
        let max_age = chrono::Duration::from_std(MAX_TOKEN_AGE).unwrap_or_default();
        let verifier = found
            .client
            .id_token_verifier()
            .set_allowed_algs(ALLOWED_ALGS)
            .require_issuer_match(true)
            // `exp` may be up to SKEW in the past.
            .set_time_fn(move || now - skew)
            .set_issue_time_verifier_fn(move |iat| {
                if iat > now + skew {
                    Err(format!("issued in the future ({iat})"))
                } else if iat < now - max_age {
                    Err(format!("issued too long ago ({iat})"))
                } else {
                    Ok(())
                }
            });
        let claims = id_token
            .claims(&verifier, nonce)
            .map_err(|e| classify(&e))?;
        let extra = &claims.additional_claims().claims;
        // azp (OIDC Core 3.1.3.7, 4 and 5): ours when present, and required
        // when the token has other audiences too.
        match extra.get("azp").and_then(|v| v.as_str()) {
            Some(azp) if azp != self.client_id => {
                return Err(ProviderRefusal::Audience(format!(
                    "the token is for another party (azp {azp:?})"
                )));
            }
            None if claims.audiences().len() > 1 => {
                return Err(ProviderRefusal::Audience(
                    "several audiences and no azp".into(),
                ));
            }
            _ => {}
        }
        if let Some(nbf) = extra.get("nbf").and_then(serde_json::Value::as_i64)
            && nbf > (now + skew).timestamp()
        {
            return Err(ProviderRefusal::Expired(format!("not valid before {nbf}")));
        }
        let read = ReadClaims {
            extra: extra.clone(),
            preferred_username: claims.preferred_username().map(|u| u.to_string()),
            nickname: claims
                .nickname()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
            email_verified: claims.email_verified(),
        };
        Ok((
            claims.issuer().to_string(),
            claims.subject().to_string(),
            claims.email().map(|e| e.to_string()),
            read,
        ))
    }
}

/// The claims read off a verified token, past `iss`, `sub` and `email`.
struct ReadClaims {
    extra: serde_json::Map<String, serde_json::Value>,
    preferred_username: Option<String>,
    nickname: Option<String>,
    name: Option<String>,
    email_verified: Option<bool>,
}

impl ReadClaims {
    fn standard(&self, name: &str) -> Option<String> {
        match name {
            "preferred_username" => self.preferred_username.clone(),
            "nickname" => self.nickname.clone(),
            "name" => self.name.clone(),
            _ => None,
        }
    }
}

fn text_claim(extra: &serde_json::Map<String, serde_json::Value>, name: &str) -> Option<String> {
    extra.get(name)?.as_str().map(str::to_string)
}

/// A claim holding a list of strings (or one string); anything else reads
/// as no groups.
fn list_claim(extra: &serde_json::Map<String, serde_json::Value>, name: &str) -> Vec<String> {
    match extra.get(name) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

fn classify(err: &ClaimsVerificationError) -> ProviderRefusal {
    let said = err.to_string();
    match err {
        ClaimsVerificationError::Expired(_) => ProviderRefusal::Expired(said),
        ClaimsVerificationError::InvalidAudience(_) => ProviderRefusal::Audience(said),
        ClaimsVerificationError::InvalidIssuer(_) => ProviderRefusal::Issuer(said),
        ClaimsVerificationError::InvalidNonce(_) => ProviderRefusal::Nonce(said),
        ClaimsVerificationError::SignatureVerification(inner) => {
            let detail = match inner {
                SignatureVerificationError::NoMatchingKey => "No matching key".to_string(),
                other => other.to_string(),
            };
            ProviderRefusal::Signature(detail)
        }
        _ => ProviderRefusal::Claims(said),
    }
}

/// An error and its causes, on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The client secret: a 0600 file, trimmed.
fn read_secret(path: &Path) -> Result<ClientSecret, SetupError> {
    crate::keys::private_file::PrivateFile::new(path)
        .read_value(true)
        .map(ClientSecret::new)
        .map_err(|reason| SetupError::Secret {
            path: path.to_path_buf(),
            reason,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn groups_read_as_a_list_or_one_string_and_nothing_else() {
        let map = |v: serde_json::Value| v.as_object().unwrap().clone();
        let claims = map(serde_json::json!({
            "groups": ["a", "b", 3], "one": "solo", "odd": {"x": 1}
        }));
        assert_eq!(list_claim(&claims, "groups"), ["a", "b"]);
        assert_eq!(list_claim(&claims, "one"), ["solo"]);
        assert!(list_claim(&claims, "odd").is_empty());
        assert!(list_claim(&claims, "missing").is_empty());
    }

    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&path).unwrap().secret(), "s3cret");
    }
}
