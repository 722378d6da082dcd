//! Any OpenID Connect provider as a connector (Google, Auth0, Keycloak, another
//! keyward), through the `openidconnect` crate.
//!
//! The provider is found by discovery at the first sign-in and again every
//! [`REDISCOVER_AFTER`]. A sign-in is the code flow with PKCE (S256), `state` and
//! `nonce`; the ID token must be signed with RS256, ES256 or EdDSA (those of them the
//! provider announces) by a key of its JWKS, for this client, by this issuer, unexpired,
//! with the nonce sent. An ID token signed by a key id keyward has not seen makes it
//! fetch the JWKS again (once per unknown key id per [`MIN_JWKS_REFETCH`]), so provider
//! key rotation needs nothing from anyone. Claims come from the ID token and, where the provider has
//! one, from its userinfo endpoint.
//!
//! In a token exchange (the connector's `token_exchange = true`), an ID token the
//! provider issued is a subject token ([`OidcProvider::identity_of_id_token`]): checked
//! the same way (signature by the provider's JWKS with the same refetch on an unknown
//! key id, issuer, expiry by the server's clock) but for an `aud` that is the
//! connector's `client_id` or one of its `exchange_audiences`, and without a nonce (no
//! sign-in of keyward's asked for it). The identity is what the ID token says; there is
//! no access token to call userinfo with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyward_proto::error::error_chain;
use keyward_proto::pkce::CodeVerifier;
use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreGenderClaim,
    CoreIdToken, CoreIdTokenClaims, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AccessTokenHash, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, SignatureVerificationError, TokenResponse as _,
};
use tokio::sync::RwLock;
use url::Url;

use super::guard::{ProviderHttp, endpoint_allowed};
use super::{UpstreamError, UpstreamIdentity};
use crate::config::connectors::OidcSettings;

/// How long a discovery document is used before it is fetched again.
pub const REDISCOVER_AFTER: Duration = Duration::from_secs(3600);
/// The least time between two JWKS fetches caused by the same unknown key id.
pub const MIN_JWKS_REFETCH: Duration = Duration::from_secs(10);

/// The ID token algorithms keyward accepts.
const ACCEPTED_ALGS: [CoreJwsSigningAlgorithm; 3] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// An OpenID Connect provider and what keyward knows of it.
pub struct OidcProvider {
    settings: OidcSettings,
    http: ProviderHttp,
    discovered: RwLock<Option<Arc<Discovered>>>,
    /// Unknown key ids that made keyward fetch the JWKS again, and when.
    refetched_for: Mutex<HashMap<String, Instant>>,
}

/// The discovery document (with the JWKS) and when it was fetched.
struct Discovered {
    metadata: CoreProviderMetadata,
    fetched_at: Instant,
}

/// Claims keyward reads beyond the standard ones: `groups`.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
pub struct Groups {
    #[serde(default)]
    groups: Option<serde_json::Value>,
}

impl openidconnect::AdditionalClaims for Groups {}

/// A provider's userinfo answer (OpenID Connect Core §5.3.2) as `openidconnect` reads
/// it, with [`Groups`].
pub type UserInfo = openidconnect::UserInfoClaims<Groups, CoreGenderClaim>;

impl OidcProvider {
    /// A provider, not contacted yet.
    pub fn new(settings: OidcSettings, http: reqwest::Client) -> Self {
        Self {
            settings,
            http: ProviderHttp(http),
            discovered: RwLock::new(None),
            refetched_for: Mutex::new(HashMap::new()),
        }
    }

    /// The issuer.
    pub fn issuer(&self) -> &Url {
        &self.settings.issuer
    }

    async fn discovered(&self) -> Result<Arc<Discovered>, UpstreamError> {
        if let Some(found) = self.discovered.read().await.as_ref()
            && found.fetched_at.elapsed() < REDISCOVER_AFTER
        {
            return Ok(found.clone());
        }
        let mut slot = self.discovered.write().await;
        if let Some(found) = slot.as_ref()
            && found.fetched_at.elapsed() < REDISCOVER_AFTER
        {
            return Ok(found.clone());
        }
        let issuer = self.settings.issuer.as_str().trim_end_matches('/');
        let discovery_error = |detail: String| UpstreamError::Discovery {
            issuer: issuer.to_owned(),
            detail,
        };
        let issuer_url =
            IssuerUrl::new(issuer.to_owned()).map_err(|e| discovery_error(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer_url, &self.http)
            .await
            .map_err(|e| discovery_error(error_chain(&e)))?;
        check_metadata(&metadata).map_err(discovery_error)?;
        let found = Arc::new(Discovered {
            metadata,
            fetched_at: Instant::now(),
        });
        tracing::info!(issuer, "discovered OpenID Connect provider");
        *slot = Some(found.clone());
        Ok(found)
    }

    /// Fetches the JWKS again after an ID token named the key id `kid` keyward does not
    /// have; false when that key id already caused a fetch moments ago.
    async fn refetch_jwks(&self, kid: &str) -> Result<bool, UpstreamError> {
        {
            let mut recent = self
                .refetched_for
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            recent.retain(|_, at| at.elapsed() < MIN_JWKS_REFETCH);
            if recent.contains_key(kid) || recent.len() >= 16 {
                return Ok(false);
            }
            recent.insert(kid.to_owned(), Instant::now());
        }
        let Some(jwks_uri) = self
            .discovered
            .read()
            .await
            .as_ref()
            .map(|found| found.metadata.jwks_uri().clone())
        else {
            return Ok(false);
        };
        let jwks = CoreJsonWebKeySet::fetch_async(&jwks_uri, &self.http)
            .await
            .map_err(|e| UpstreamError::Discovery {
                issuer: self.settings.issuer.to_string(),
                detail: format!("fetching {}: {}", jwks_uri.as_str(), error_chain(&e)),
            })?;
        let mut slot = self.discovered.write().await;
        if let Some(found) = slot.as_ref() {
            *slot = Some(Arc::new(Discovered {
                metadata: found.metadata.clone().set_jwks(jwks),
                fetched_at: found.fetched_at,
            }));
        }
        tracing::info!(issuer = %self.settings.issuer, "fetched the provider's keys again (unknown key id)");
        Ok(true)
    }

    fn client(
        &self,
        metadata: &CoreProviderMetadata,
        redirect_uri: &str,
    ) -> Result<ProviderClient, UpstreamError> {
        let secret = self
            .settings
            .client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.secret().to_owned()));
        let redirect =
            RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| UpstreamError::Malformed {
                url: redirect_uri.to_owned(),
                detail: e.to_string(),
            })?;
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            secret,
        )
        .set_redirect_uri(redirect);
        // client_secret_basic is the default; use the form body when the provider
        // announces only that.
        let methods = metadata.token_endpoint_auth_methods_supported();
        let post_only = methods.is_some_and(|m| {
            m.contains(&CoreClientAuthMethod::ClientSecretPost)
                && !m.contains(&CoreClientAuthMethod::ClientSecretBasic)
        });
        Ok(if post_only || self.settings.client_secret.is_none() {
            client.set_auth_type(AuthType::RequestBody)
        } else {
            client
        })
    }

    /// Where to send the browser: the provider's authorization endpoint with `state`,
    /// `nonce` and the PKCE challenge of `verifier`; `prompt=login` when `fresh`.
    pub async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        verifier: &CodeVerifier,
        fresh: bool,
    ) -> Result<Url, UpstreamError> {
        let found = self.discovered().await?;
        let client = self.client(&found.metadata, redirect_uri)?;
        let (state, nonce) = (state.to_owned(), nonce.to_owned());
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            verifier.secret().to_owned(),
        ));
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(challenge);
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if fresh {
            request = request.add_prompt(CoreAuthPrompt::Login);
        }
        let (url, _, _) = request.url();
        Ok(url)
    }

    /// Redeems the provider's code and reads who signed in.
    pub async fn finish(
        &self,
        redirect_uri: &str,
        code: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<UpstreamIdentity, UpstreamError> {
        let found = self.discovered().await?;
        let client = self.client(&found.metadata, redirect_uri)?;
        let token_url = found
            .metadata
            .token_endpoint()
            .map(|u| u.as_str().to_owned())
            .unwrap_or_default();
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|_| UpstreamError::Discovery {
                issuer: self.settings.issuer.to_string(),
                detail: "the provider has no token endpoint".into(),
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| token_error(&token_url, e))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| UpstreamError::Malformed {
                url: token_url.clone(),
                detail: "the token response has no id_token".into(),
            })?;

        let announced = found.metadata.id_token_signing_alg_values_supported();
        let allowed: Vec<_> = ACCEPTED_ALGS
            .iter()
            .filter(|alg| announced.contains(alg))
            .cloned()
            .collect();
        let nonce = Nonce::new(nonce.to_owned());
        let (claims, client) = self
            .verified_claims(client, id_token, &nonce, &allowed, redirect_uri)
            .await?;
        check_at_hash(&client, id_token, &claims, response.access_token())?;

        let mut identity = identity_of(&claims, &id_token.to_string());

        self.fill_from_userinfo(
            &client,
            &found,
            response.access_token(),
            &claims,
            &mut identity,
        )
        .await?;
        Ok(identity)
    }

    /// The claims of `id_token`, verified (signature by a key of the provider's JWKS,
    /// one of `allowed` algorithms, this client, this issuer, unexpired, `nonce`); on a
    /// key id keyward has not seen, the keys are fetched again once and it is tried
    /// again (with the client rebuilt on the new keys, which is returned).
    async fn verified_claims(
        &self,
        mut client: ProviderClient,
        id_token: &CoreIdToken,
        nonce: &Nonce,
        allowed: &[CoreJwsSigningAlgorithm],
        redirect_uri: &str,
    ) -> Result<(CoreIdTokenClaims, ProviderClient), UpstreamError> {
        loop {
            let verified = {
                let verifier = client
                    .id_token_verifier()
                    .set_allowed_algs(allowed.to_vec());
                id_token.claims(&verifier, nonce).cloned()
            };
            match verified {
                Ok(claims) => return Ok((claims, client)),
                Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                )) if self
                    .refetch_jwks(&header_kid(&id_token.to_string()))
                    .await? =>
                {
                    let refreshed = self.discovered().await?;
                    client = self.client(&refreshed.metadata, redirect_uri)?;
                }
                Err(e) => return Err(UpstreamError::IdToken(e.to_string())),
            }
        }
    }

    /// Who the ID token `token` is about, and when it expires, for a token exchange (see
    /// the module docs), as of `now` by the server's clock.
    pub async fn identity_of_id_token(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(UpstreamIdentity, i64), UpstreamError> {
        // A token that is not even a JWT is refused before the provider is contacted.
        if token.parse::<CoreIdToken>().is_err() {
            return Err(UpstreamError::IdToken("not a JWT".into()));
        }
        let mut found = self.discovered().await?;
        let mut refetched = false;
        loop {
            match check_exchange_id_token(&self.settings, &found.metadata, token, now)? {
                Some(done) => return Ok(done),
                None if !refetched && self.refetch_jwks(&header_kid(token)).await? => {
                    refetched = true;
                    found = self.discovered().await?;
                }
                None => {
                    return Err(UpstreamError::IdToken(
                        ClaimsVerificationError::SignatureVerification(
                            SignatureVerificationError::NoMatchingKey,
                        )
                        .to_string(),
                    ));
                }
            }
        }
    }

    /// Fills what the ID token did not say from the provider's userinfo, when it has
    /// one (the ID token wins where both speak).
    async fn fill_from_userinfo(
        &self,
        client: &ProviderClient,
        found: &Discovered,
        access_token: &openidconnect::AccessToken,
        claims: &CoreIdTokenClaims,
        identity: &mut UpstreamIdentity,
    ) -> Result<(), UpstreamError> {
        if let Ok(request) = client.user_info(access_token.clone(), Some(claims.subject().clone()))
        {
            let userinfo_url = found
                .metadata
                .userinfo_endpoint()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default();
            let info = request
                .request_async::<Groups, _, CoreGenderClaim>(&self.http)
                .await
                .map_err(|e| UpstreamError::Malformed {
                    url: userinfo_url,
                    detail: error_chain(&e),
                })?;
            merge_userinfo(identity, &info);
        }
        Ok(())
    }
}

/// Why a provider's discovery document (OpenID Connect Discovery §3, as `openidconnect`
/// read it) is not used: it names an endpoint keyward must not send browsers, codes or
/// tokens to (plain http, a metadata address: [`endpoint_allowed`]), or it signs ID
/// tokens with none of the algorithms keyward accepts.
pub fn check_metadata(metadata: &CoreProviderMetadata) -> Result<(), String> {
    let endpoints = [
        Some(metadata.authorization_endpoint().url()),
        metadata.token_endpoint().map(|u| u.url()),
        metadata.userinfo_endpoint().map(|u| u.url()),
        Some(metadata.jwks_uri().url()),
    ];
    for endpoint in endpoints.into_iter().flatten() {
        endpoint_allowed(endpoint)?;
    }
    if !metadata
        .id_token_signing_alg_values_supported()
        .iter()
        .any(|alg| ACCEPTED_ALGS.contains(alg))
    {
        return Err("the provider signs ID tokens with none of RS256, ES256, EdDSA".into());
    }
    Ok(())
}

/// Who the ID token `token`, offered in a token exchange, is about and when it expires
/// (see the module docs), checked against the provider `metadata` (with its JWKS) of
/// the connector `settings` as of `now`; `Ok(None)` when no key of the JWKS signed it
/// (the caller may fetch the keys again and retry).
pub fn check_exchange_id_token(
    settings: &OidcSettings,
    metadata: &CoreProviderMetadata,
    token: &str,
    now: i64,
) -> Result<Option<(UpstreamIdentity, i64)>, UpstreamError> {
    let id_token: CoreIdToken = token
        .parse()
        .map_err(|_| UpstreamError::IdToken("not a JWT".into()))?;
    let time = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    let announced = metadata.id_token_signing_alg_values_supported();
    let allowed: Vec<_> = ACCEPTED_ALGS
        .iter()
        .filter(|alg| announced.contains(alg))
        .cloned()
        .collect();
    let verifier = CoreIdTokenVerifier::new_public_client(
        ClientId::new(settings.client_id.clone()),
        metadata.issuer().clone(),
        metadata.jwks().clone(),
    )
    .set_allowed_algs(allowed)
    .require_audience_match(false)
    .set_time_fn(move || time);
    let claims = match id_token.claims(&verifier, |_: Option<&Nonce>| Ok(())) {
        Ok(claims) => claims,
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        )) => return Ok(None),
        Err(e) => return Err(UpstreamError::IdToken(e.to_string())),
    };
    let for_us = claims.audiences().iter().any(|aud| {
        **aud == settings.client_id || settings.exchange_audiences.iter().any(|a| **aud == *a)
    });
    if !for_us {
        return Err(UpstreamError::IdToken(format!(
            "its aud is neither the connector's client_id nor one of its exchange_audiences ({})",
            settings.client_id
        )));
    }
    let identity = identity_of(claims, token);
    Ok(Some((identity, claims.expiration().timestamp())))
}

/// Fills what `identity` (from the ID token) does not say from the provider's userinfo
/// answer `info`: the ID token wins where both speak.
pub fn merge_userinfo(identity: &mut UpstreamIdentity, info: &UserInfo) {
    // The ID token wins where both speak; userinfo fills the gaps.
    if identity.email.is_none() {
        identity.email = info.email().map(|e| e.as_str().to_owned());
        identity.email_verified = info.email_verified().unwrap_or(false);
    }
    if identity.name.is_none() {
        identity.name = info
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned());
    }
    if identity.username.is_none() {
        identity.username = info.preferred_username().map(|u| u.as_str().to_owned());
    }
    if identity.groups.is_empty() {
        identity.groups = groups_of(&info.additional_claims().groups);
    }
}

/// The client of a provider as keyward uses it: authorization and token endpoints set,
/// userinfo and the rest as discovery found them.
type ProviderClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// `at_hash`, when the ID token has one, binds the access token to it.
fn check_at_hash(
    client: &ProviderClient,
    id_token: &CoreIdToken,
    claims: &CoreIdTokenClaims,
    access_token: &openidconnect::AccessToken,
) -> Result<(), UpstreamError> {
    let Some(expected) = claims.access_token_hash() else {
        return Ok(());
    };
    let verifier = client.id_token_verifier();
    let alg = id_token
        .signing_alg()
        .map_err(|e| UpstreamError::IdToken(e.to_string()))?;
    let key = id_token
        .signing_key(&verifier)
        .map_err(|e| UpstreamError::IdToken(e.to_string()))?;
    let actual = AccessTokenHash::from_token(access_token, alg, key)
        .map_err(|e| UpstreamError::IdToken(e.to_string()))?;
    if actual == *expected {
        Ok(())
    } else {
        Err(UpstreamError::IdToken(
            "at_hash does not match the access token".into(),
        ))
    }
}

/// The `groups` claim of a verified JWT's payload, or of a userinfo answer.
fn groups_of(value: &Option<serde_json::Value>) -> Vec<String> {
    match value {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|g| g.as_str())
            .filter(|g| !g.is_empty() && g.len() <= 256)
            .take(256)
            .map(str::to_owned)
            .collect(),
        Some(serde_json::Value::String(one)) if !one.is_empty() => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// The `kid` of a JWT's header ("" when it has none).
fn header_kid(jwt: &str) -> String {
    jwt.split('.')
        .next()
        .and_then(|header| URL_SAFE_NO_PAD.decode(header).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|header| header.get("kid")?.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The `groups` member of a JWT's payload (read only after the JWT was verified).
fn groups_claim_of(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get_mut("groups").map(serde_json::Value::take)
}

/// A token endpoint failure, without the body (which could hold tokens).
fn token_error<RE: std::error::Error + 'static>(
    url: &str,
    error: RequestTokenError<
        RE,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> UpstreamError {
    match error {
        RequestTokenError::ServerResponse(response) => UpstreamError::Refused {
            error: response.error().to_string(),
            description: response.error_description().cloned(),
        },
        RequestTokenError::Request(e) => UpstreamError::Malformed {
            url: url.to_owned(),
            detail: error_chain(&e),
        },
        RequestTokenError::Parse(e, _body) => UpstreamError::Malformed {
            url: url.to_owned(),
            detail: format!("unreadable token response: {e}"),
        },
        RequestTokenError::Other(detail) => UpstreamError::Malformed {
            url: url.to_owned(),
            detail,
        },
    }
}

/// The person an ID token's verified `claims` describe; `raw` is the token itself, whose
/// `groups` claim the typed claims do not carry.
fn identity_of(claims: &CoreIdTokenClaims, raw: &str) -> UpstreamIdentity {
    UpstreamIdentity {
        subject: claims.subject().as_str().to_owned(),
        email: claims.email().map(|e| e.as_str().to_owned()),
        email_verified: claims.email_verified().unwrap_or(false),
        name: claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned()),
        username: claims.preferred_username().map(|u| u.as_str().to_owned()),
        groups: groups_of(&groups_claim_of(raw)),
    }
}
