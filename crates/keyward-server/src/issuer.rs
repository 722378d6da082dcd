//! Minting and checking keyward's tokens: JWT access tokens (RFC 9068), ID tokens
//! (OpenID Connect Core §2), opaque refresh tokens, and the validation a token must pass
//! before userinfo or introspection trusts it.

use keyward_proto::claims::{AccessTokenClaims, IdTokenClaims, UserClaims};
use keyward_proto::token::TokenResponse;
use keyward_proto::{OpaqueToken, ScopeSet};

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::SigningAlg;
use crate::domain::{Client, Grant, RefreshToken, User, secs};
use crate::keys::{KeyError, Keys, VerifyError, at_hash};
use crate::mac::{MacKey, Purpose};
use crate::store::{Store, StoreError};

/// The `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// The `typ` header of ID tokens.
pub const ID_TOKEN_TYP: &str = "JWT";

/// What minting and checking keyward's tokens needs: the configuration (issuer,
/// lifetimes), the signing keys, the store (users' groups, revocations) and the MAC key
/// (refresh-token successors). Borrowed from the application state for one request.
#[derive(Clone, Copy)]
pub struct Issuer<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// The signing keys.
    pub keys: &'a Keys,
    /// The store.
    pub store: &'a dyn Store,
    /// The MAC key.
    pub mac: &'a MacKey,
    /// The clock.
    pub clock: &'a dyn Clock,
}

impl Issuer<'_> {
    /// Seconds since the Unix epoch, now, by the issuer's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }
}

/// A failure while minting tokens.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Signing failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Storing the refresh token failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The profile, email and groups claims `scope` releases about `user` (the groups are
/// read from the store only when `groups` is granted).
pub async fn user_claims(
    issuer: &Issuer<'_>,
    user: &User,
    scope: &ScopeSet,
) -> Result<UserClaims, StoreError> {
    let mut claims = UserClaims::default();
    if scope.contains("profile") {
        claims.name = user.name.clone();
        claims.preferred_username = Some(user.username.clone());
    }
    if scope.contains("email") {
        claims.email = user.email.clone();
        claims.email_verified = user.email.as_ref().map(|_| user.email_verified);
    }
    if scope.contains("groups") {
        claims.groups = Some(
            crate::accounts::groups_of(
                issuer.store,
                &user.id,
                issuer.now(),
                issuer.config.groups_max_age,
            )
            .await?,
        );
    }
    Ok(claims)
}

/// The claims of an access token for `client`, about `subject` (a user of `grant`, or
/// the client itself), living the configured access token lifetime from now. A token
/// without a grant carries the client's [`client_tag`], so that it dies with the client
/// record it was issued under.
pub fn access_claims(
    issuer: &Issuer<'_>,
    client: &Client,
    subject: &str,
    scope: &ScopeSet,
    grant: Option<&Grant>,
) -> AccessTokenClaims {
    let issued = issuer.now();
    let ttl = secs(issuer.config.access_token_ttl);
    AccessTokenClaims {
        iss: issuer.config.issuer_str().to_owned(),
        sub: subject.to_owned(),
        aud: client.client_id.as_str().into(),
        exp: issued + ttl,
        iat: issued,
        jti: keyward_proto::secret::random_urlsafe(16),
        client_id: client.client_id.clone(),
        scope: scope.to_string(),
        auth_time: grant.map(|g| g.auth_time),
        gid: grant.map(|g| g.id.clone()),
        act: None,
        client_tag: grant.is_none().then(|| client_tag(issuer.mac, client)),
    }
}

/// Signs access token `claims`.
pub fn sign_access_token(
    issuer: &Issuer<'_>,
    claims: &AccessTokenClaims,
) -> Result<String, KeyError> {
    issuer
        .keys
        .sign(SigningAlg::ES256, ACCESS_TOKEN_TYP, claims)
}

/// Signs an access token for `client`, about `user` (or the client itself).
pub fn access_token(
    issuer: &Issuer<'_>,
    client: &Client,
    subject: &str,
    scope: &ScopeSet,
    grant: Option<&Grant>,
) -> Result<(String, AccessTokenClaims), KeyError> {
    let claims = access_claims(issuer, client, subject, scope, grant);
    let token = sign_access_token(issuer, &claims)?;
    Ok((token, claims))
}

/// A short tag of the client record a token without a grant was issued under: its id
/// and secret, under the server's MAC key. A client removed and registered again under
/// the same id gets a new secret, hence a new tag, so the tokens of the old record stay
/// dead; nobody without the key can compute a tag.
pub fn client_tag(mac: &MacKey, client: &Client) -> String {
    tag_of(mac, &client.client_id, client.secret_hash.as_ref())
}

/// Whether `presented` is the tag of `client`'s record at `now`: under its secret, or
/// under the secret before the last rotation while that is still accepted (so that a
/// rotation with a grace period does not end the tokens already issued).
pub fn client_tag_matches(mac: &MacKey, client: &Client, presented: &str, now: i64) -> bool {
    presented == client_tag(mac, client)
        || client
            .previous_secret_at(now)
            .is_some_and(|old| presented == tag_of(mac, &client.client_id, Some(old)))
}

fn tag_of(mac: &MacKey, client_id: &str, secret_hash: Option<&keyward_proto::TokenHash>) -> String {
    let mut data = client_id.as_bytes().to_vec();
    data.push(0);
    if let Some(hash) = secret_hash {
        data.extend_from_slice(hash.as_str().as_bytes());
    }
    let mut tag = mac.tag(Purpose::ClientRecord, &data);
    tag.truncate(22);
    tag
}

/// Mints the response of a user grant: access token, ID token when `openid` was
/// granted, and a fresh refresh token when `with_refresh` (stored by the caller through
/// `store_refresh`).
pub async fn user_grant_response(
    issuer: &Issuer<'_>,
    client: &Client,
    user: &User,
    grant: &Grant,
    scope: &ScopeSet,
    nonce: Option<String>,
    refresh: Option<OpaqueToken>,
) -> Result<TokenResponse, IssueError> {
    let (access, claims) = access_token(issuer, client, &user.id, scope, Some(grant))?;
    let id_token = if scope.contains("openid") {
        let ttl = secs(issuer.config.id_token_ttl);
        let id_claims = IdTokenClaims {
            iss: claims.iss.clone(),
            sub: user.id.clone(),
            aud: client.client_id.clone(),
            exp: claims.iat + ttl,
            iat: claims.iat,
            auth_time: grant.auth_time,
            nonce,
            at_hash: Some(at_hash(&access)),
            azp: client.client_id.clone(),
            user: user_claims(issuer, user, scope).await?,
        };
        Some(
            issuer
                .keys
                .sign(client.id_token_alg, ID_TOKEN_TYP, &id_claims)?,
        )
    } else {
        None
    };
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer".into(),
        expires_in: Some(issuer.config.access_token_ttl.as_secs()),
        refresh_token: refresh.map(|t| t.secret().to_owned()),
        id_token,
        scope: scope.clone(),
        issued_token_type: None,
    })
}

/// The successor of refresh token `token` at rotation: derived from the token with
/// the server's MAC key, so that presenting the same token again yields the same
/// successor (a retry after a lost answer, or a race between two requests of one
/// client, never forks the grant into two chains and never needs a time window), while
/// nobody without the key can compute it. Only its hash is stored.
pub fn refresh_successor(
    mac: &MacKey,
    token: &OpaqueToken,
    grant: &Grant,
    now: i64,
) -> (OpaqueToken, RefreshToken) {
    let successor = OpaqueToken::new(mac.tag(Purpose::RefreshSuccessor, token.secret().as_bytes()));
    let record = RefreshToken {
        token_hash: successor.hash(),
        grant_id: grant.id.clone(),
        created_at: now,
        expires_at: grant.expires_at,
        rotated_at: None,
    };
    (successor, record)
}

/// A new refresh token record for `grant`, made at `now`, expiring with the grant.
pub fn new_refresh_token(grant: &Grant, now: i64) -> (OpaqueToken, RefreshToken) {
    let token = OpaqueToken::generate();
    let record = RefreshToken {
        token_hash: token.hash(),
        grant_id: grant.id.clone(),
        created_at: now,
        expires_at: grant.expires_at,
        rotated_at: None,
    };
    (token, record)
}

/// Why an access token presented to keyward was refused. (A store failure is not a
/// refusal: [`validate_access_token`] returns it apart, so that an outage is answered as
/// one and never as "inactive".)
#[derive(Debug, thiserror::Error)]
pub enum TokenRefused {
    /// Malformed, badly signed, expired, or for another issuer.
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// Revoked, its grant revoked, or its user or client gone or disabled.
    #[error("token revoked")]
    Revoked,
}

/// An access token that passed every check, with its user when it has one.
pub struct ValidAccessToken {
    /// The claims.
    pub claims: AccessTokenClaims,
    /// The user of a user grant.
    pub user: Option<User>,
}

/// Checks an access token keyward issued: signature, expiry, issuer, and that neither
/// it nor its grant was revoked and its user is still enabled. The outer error is the
/// store's; the inner result says whether the token is good.
pub async fn validate_access_token(
    issuer: &Issuer<'_>,
    token: &str,
) -> Result<Result<ValidAccessToken, TokenRefused>, StoreError> {
    let claims: AccessTokenClaims = match issuer
        .keys
        .verify(token, ACCESS_TOKEN_TYP, issuer.config.issuer_str(), false)
        .await
    {
        Ok(claims) => claims,
        Err(e) => return Ok(Err(e.into())),
    };
    let store = issuer.store;
    if store.is_jti_revoked(&claims.jti).await? {
        return Ok(Err(TokenRefused::Revoked));
    }
    let user = match &claims.gid {
        Some(gid) => match store.get_grant_with_user(gid).await? {
            Some((grant, user))
                if !grant.revoked && grant.user_id == claims.sub && !user.disabled =>
            {
                Some(user)
            }
            _ => return Ok(Err(TokenRefused::Revoked)),
        },
        None => {
            // The client record it was issued under must still be there: the same id
            // registered again is another record (another tag).
            let current = store.get_client(&claims.client_id).await?;
            let same_record = current.is_some_and(|client| {
                claims
                    .client_tag
                    .as_deref()
                    .is_some_and(|tag| client_tag_matches(issuer.mac, &client, tag, issuer.now()))
            });
            if !same_record {
                return Ok(Err(TokenRefused::Revoked));
            }
            None
        }
    };
    Ok(Ok(ValidAccessToken { claims, user }))
}
