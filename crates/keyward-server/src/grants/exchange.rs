//! Token exchange (RFC 8693): a client trades a token that says who someone is (the
//! subject token) for a short-lived access token for another service (an audience
//! registered in `[[audiences]]`), holding the scopes the `[[policies]]` give that
//! subject, and naming who acts for them when an actor token is given.
//!
//! Subject tokens accepted here:
//! - keyward's own access tokens (token type `…:access_token` or `…:jwt`), still
//!   active, and issued to the exchanging client: a client cannot exchange another
//!   client's token (actor tokens are always of this kind);
//! - a JWT (`…:jwt`) whose `iss` is a `[[trusted_issuers]]` entry (a CI system's
//!   workload identity), verified as [`crate::upstream::trusted`] says: it names the
//!   machine subject `trusted:<id>:<claim values>`, which is the new token's `sub` and
//!   what the policies are matched against. Such a token has no grant: like a client's
//!   own token, it carries the exchanging client's `client_tag` (so it dies with that
//!   client record) and lives no longer than the JWT it came from;
//! - a GitHub access token (`…:access_token` that is not a keyward JWT), when a
//!   `github` connector has `token_exchange = true`: GitHub must know it as a token of
//!   that connector's OAuth app ([`crate::upstream::github`]); the GitHub account maps
//!   to keyward's account as a sign-in through that connector would
//!   ([`crate::accounts::resolve`]: linked, or created when the connector creates
//!   accounts, refused when it does not and nobody holds the identity, refused for a
//!   disabled account), and the new token is about that person (policies by `user:`,
//!   `group:`, `connector:` names);
//! - an upstream provider's ID token (`…:id_token`) whose `iss` is the issuer of an
//!   `oidc` connector with `token_exchange = true`, verified against that connector's
//!   JWKS with `aud` its `client_id` or one of its `exchange_audiences`
//!   ([`crate::upstream::oidc`]), mapped to the account like a GitHub token; the new
//!   token lives no longer than the ID token.
//!
//! A token about a person whose proof came from a provider gets a grant of its own,
//! stored like a browser sign-in's (the exchanging client, the person, the granted
//! scope, ending when the token does), and its `gid`: the one check every access
//! token already passes at introspection and userinfo (grant not revoked, user not
//! disabled) then covers it, the person sees it on the account page and can revoke
//! it, and signing out everywhere or disabling the account ends it, with no second
//! path through validation to keep in step.
//!
//! The new token:
//! - `aud`: the requested audiences and resources (each registered, else
//!   `invalid_target`);
//! - `scope`: the requested scopes the subject holds (`invalid_scope` when it holds
//!   none of them; asking for nothing grants nothing);
//! - lives `[exchange] lifetime` (15 minutes by default), never longer than an
//!   audience's `max_lifetime` and never past the subject token's own expiry;
//! - stays tied to the subject's grant (revoking the login revokes it) or, for a
//!   client's own token, to the client record;
//! - carries `act` (RFC 8693 §4.1) naming the actor, nested when the actor token
//!   itself had one; without an actor token, the subject token's `act` is kept.

use keyward_proto::ErrorCode;
use keyward_proto::ScopeSet;
use keyward_proto::claims::{AccessTokenClaims, Audience};
use keyward_proto::exchange::{Actor, TokenExchangeRequest, token_type};
use keyward_proto::token::TokenResponse;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::GrantError;
use crate::accounts::{self, AccountError, Intent};
use crate::domain::{Client, Grant, User};
use crate::issuer::{self, Issuer, ValidAccessToken, validate_access_token};
use crate::policy::{self, Held};
use crate::upstream::trusted::MachineIdentity;
use crate::upstream::{Connectors, Provider, UpstreamError, UpstreamIdentity};

/// The most actors an `act` chain may hold (each exchange with an actor adds one).
pub const MAX_ACTORS: usize = 5;

/// Who a subject token is about.
enum Subject {
    /// A keyward access token: a person's login, or a client's own token.
    Keyward(Box<ValidAccessToken>),
    /// A machine named by a trusted issuer's JWT.
    Machine(MachineIdentity),
    /// A person named by an upstream provider's token, mapped to their account.
    Person {
        /// The account.
        user: Box<User>,
        /// When the provider's token expires, if it says.
        exp: Option<i64>,
    },
}

impl Subject {
    /// The new token's `sub`.
    fn name(&self) -> &str {
        match self {
            Self::Keyward(valid) => &valid.claims.sub,
            Self::Machine(machine) => &machine.subject,
            Self::Person { user, .. } => &user.id,
        }
    }

    /// When the subject token expires, if it says.
    fn exp(&self) -> Option<i64> {
        match self {
            Self::Keyward(valid) => Some(valid.claims.exp),
            Self::Machine(machine) => Some(machine.exp),
            Self::Person { exp, .. } => *exp,
        }
    }
}

/// Exchanges `request`'s subject token for an access token for `client`.
/// `connectors` holds the trusted issuers of machine subjects.
pub async fn exchange(
    issuer: &Issuer<'_>,
    connectors: &Connectors,
    client: &Client,
    request: TokenExchangeRequest,
) -> Result<TokenResponse, GrantError> {
    let now = issuer.now();
    let (audience, lifetime) = targets(issuer, &request)?;
    let subject = subject(issuer, connectors, client, &request).await?;
    let act = match (&request.actor_token, &request.actor_token_type) {
        (Some(token), Some(kind)) => {
            let actor = keyward_token(issuer, client, token, kind, "actor_token").await?;
            Some(actor_of(actor.claims)?)
        }
        _ => match &subject {
            Subject::Keyward(valid) => valid.claims.act.clone(),
            Subject::Machine(_) | Subject::Person { .. } => None,
        },
    };
    let held = subject_scopes(issuer, connectors, client, &subject).await?;
    let scope = granted_scope(&held, request.scope.as_ref())?;

    let exp = subject
        .exp()
        .map_or(now + lifetime, |until| (now + lifetime).min(until));
    let gid = match &subject {
        Subject::Keyward(valid) => valid.claims.gid.clone(),
        Subject::Machine(_) => None,
        Subject::Person { user, .. } => {
            let grant = Grant {
                id: keyward_proto::secret::random_urlsafe(16),
                client_id: client.client_id.clone(),
                user_id: user.id.clone(),
                scope: scope.clone(),
                auth_time: now,
                nonce: None,
                created_at: now,
                expires_at: exp,
                revoked: false,
            };
            issuer.store.insert_grant(&grant).await?;
            Some(grant.id)
        }
    };
    let claims = AccessTokenClaims {
        iss: issuer.config.issuer_str().to_owned(),
        sub: subject.name().to_owned(),
        aud: audience,
        exp,
        iat: now,
        jti: keyward_proto::secret::random_urlsafe(16),
        client_id: client.client_id.clone(),
        scope: scope.to_string(),
        auth_time: match &subject {
            Subject::Keyward(valid) => valid.claims.auth_time,
            Subject::Machine(_) => None,
            Subject::Person { .. } => Some(now),
        },
        client_tag: gid
            .is_none()
            .then(|| issuer::client_tag(issuer.mac, client)),
        gid,
        act,
    };
    let token = issuer::sign_access_token(issuer, &claims).map_err(issuer::IssueError::from)?;
    Ok(TokenResponse {
        access_token: token,
        token_type: "Bearer".into(),
        expires_in: Some(u64::try_from(claims.exp - now).unwrap_or(0)),
        refresh_token: None,
        id_token: None,
        scope,
        issued_token_type: Some(token_type::ACCESS_TOKEN.to_owned()),
    })
}

/// The audience of the new token and its lifetime in seconds: every target must be
/// registered; the lifetime is the configured one, capped by each audience's
/// `max_lifetime`.
fn targets(
    issuer: &Issuer<'_>,
    request: &TokenExchangeRequest,
) -> Result<(Audience, i64), GrantError> {
    let settings = &issuer.config.exchange;
    let named = request.targets();
    if named.is_empty() {
        return Err(GrantError::invalid_request(
            "audience or resource is required: name the service the token is for",
        ));
    }
    let mut lifetime = settings.lifetime;
    for target in &named {
        let Some(audience) = settings.audience(target) else {
            let shown: String = target.chars().take(80).collect();
            return Err(GrantError::refused(
                ErrorCode::InvalidTarget,
                format!("{shown:?} is not a registered audience"),
            ));
        };
        if let Some(most) = audience.max_lifetime {
            lifetime = lifetime.min(most);
        }
    }
    let audience = Audience::of(named.into_iter().map(str::to_owned).collect());
    Ok((audience, crate::domain::secs(lifetime)))
}

/// The subject of `request`: an upstream ID token when its type is `…:id_token`; a
/// trusted issuer's JWT when its type is `…:jwt` and its `iss` is not this server; a
/// GitHub token when its type is `…:access_token`, it is not a JWT and a `github`
/// connector exchanges tokens; else a keyward access token.
async fn subject(
    issuer: &Issuer<'_>,
    connectors: &Connectors,
    client: &Client,
    request: &TokenExchangeRequest,
) -> Result<Subject, GrantError> {
    let token = &request.subject_token;
    if request.subject_token_type == token_type::ID_TOKEN {
        return oidc_person(issuer, connectors, token).await;
    }
    if request.subject_token_type == token_type::JWT
        && let Some(iss) = unverified_issuer(token)
        && iss != issuer.config.issuer_str()
    {
        let Some(trusted) = connectors.trusted_issuers().by_issuer(&iss) else {
            return Err(GrantError::invalid_grant(
                "subject_token: its issuer is not trusted here",
            ));
        };
        let id = &trusted.config().id;
        return match trusted.verify(token, issuer.now()).await {
            Ok(machine) => Ok(Subject::Machine(machine)),
            Err(e) => {
                tracing::info!(trusted_issuer = %id, error = %e, "a trusted issuer's token was refused");
                Err(GrantError::invalid_grant(format!(
                    "subject_token from the trusted issuer {id} was not accepted: {e}"
                )))
            }
        };
    }
    if request.subject_token_type == token_type::ACCESS_TOKEN
        && token.split('.').count() != 3
        && let Some(person) = github_person(issuer, connectors, token).await?
    {
        return Ok(person);
    }
    keyward_token(
        issuer,
        client,
        token,
        &request.subject_token_type,
        "subject_token",
    )
    .await
    .map(|valid| Subject::Keyward(Box::new(valid)))
}

/// The person a GitHub access token belongs to, through the first enabled `github`
/// connector with `token_exchange = true` that accepts it; `None` when no connector
/// exchanges GitHub tokens.
async fn github_person(
    issuer: &Issuer<'_>,
    connectors: &Connectors,
    token: &str,
) -> Result<Option<Subject>, GrantError> {
    let mut refusal = None;
    for connector in connectors.all_enabled() {
        let Provider::Github(github) = &connector.provider else {
            continue;
        };
        if !connector.config.token_exchange {
            continue;
        }
        match github.identity_of_token(token).await {
            Ok(identity) => {
                return person(issuer, &connector.config, &identity, None)
                    .await
                    .map(Some);
            }
            Err(e) => refusal = Some((connector.config.id.clone(), e)),
        }
    }
    match refusal {
        None => Ok(None),
        Some((id, e)) => Err(upstream_refused(&id, &e)),
    }
}

/// The person an upstream ID token is about, through the enabled `oidc` connectors
/// with `token_exchange = true` whose issuer is the token's `iss`: the first that
/// accepts it (several may share a provider, as clients of different algorithms or
/// audiences).
async fn oidc_person(
    issuer: &Issuer<'_>,
    connectors: &Connectors,
    token: &str,
) -> Result<Subject, GrantError> {
    let iss = unverified_issuer(token).unwrap_or_default();
    let same = |a: &str| a.trim_end_matches('/') == iss.trim_end_matches('/');
    let mut refusal = None;
    for connector in connectors.all_enabled() {
        let Provider::Oidc(oidc) = &connector.provider else {
            continue;
        };
        if !connector.config.token_exchange || iss.is_empty() || !same(oidc.issuer().as_str()) {
            continue;
        }
        match oidc.identity_of_id_token(token, issuer.now()).await {
            Ok((identity, exp)) => {
                return person(issuer, &connector.config, &identity, Some(exp)).await;
            }
            Err(e) => refusal = Some((connector.config.id.clone(), e)),
        }
    }
    Err(match refusal {
        Some((id, e)) => upstream_refused(&id, &e),
        None => GrantError::invalid_grant(
            "subject_token: its issuer is not an oidc connector with token_exchange = true",
        ),
    })
}

/// `invalid_grant` for a provider's token the connector `id` did not accept.
fn upstream_refused(id: &str, e: &UpstreamError) -> GrantError {
    tracing::info!(connector = %id, error = %e, "a provider's token was refused for exchange");
    GrantError::invalid_grant(format!(
        "subject_token was not accepted by the connector {id}: {e}"
    ))
}

/// The account `identity` signs in to through `connector`, as a browser sign-in would
/// find (or create) it.
async fn person(
    issuer: &Issuer<'_>,
    connector: &crate::config::ConnectorConfig,
    identity: &UpstreamIdentity,
    exp: Option<i64>,
) -> Result<Subject, GrantError> {
    match accounts::resolve(
        issuer.store,
        connector,
        identity,
        Intent::SignIn,
        &issuer.config.reserved_usernames,
        issuer.now(),
    )
    .await
    {
        Ok((user, _)) => Ok(Subject::Person {
            user: Box::new(user),
            exp,
        }),
        Err(AccountError::Store(e)) => Err(e.into()),
        Err(
            e @ (AccountError::Disabled | AccountError::NoAccount | AccountError::HeldByAnother),
        ) => Err(GrantError::invalid_grant(format!(
            "subject_token: {e} (connector {})",
            connector.id
        ))),
    }
}

/// The `iss` of a JWT's payload, unverified: only to pick who must verify it.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_owned)
}

/// A keyward access token given as `what` (subject or actor token): of a type that
/// names one, active, and issued to `client`.
async fn keyward_token(
    issuer: &Issuer<'_>,
    client: &Client,
    token: &str,
    kind: &str,
    what: &str,
) -> Result<ValidAccessToken, GrantError> {
    if kind != token_type::ACCESS_TOKEN && kind != token_type::JWT {
        let id_token = if what == "subject_token" {
            format!(" (or {})", token_type::ID_TOKEN)
        } else {
            String::new()
        };
        return Err(GrantError::invalid_request(format!(
            "{what}_type must be {} or {}{id_token}",
            token_type::ACCESS_TOKEN,
            token_type::JWT
        )));
    }
    let valid = match validate_access_token(issuer, token).await? {
        Ok(valid) => valid,
        Err(refused) => {
            return Err(GrantError::invalid_grant(format!(
                "{what} is not an active token of this server ({refused})"
            )));
        }
    };
    if !valid.claims.aud.contains(&client.client_id) {
        return Err(GrantError::invalid_grant(format!(
            "{what} was issued to another client"
        )));
    }
    Ok(valid)
}

/// The `act` claim naming the party of an actor token: its subject, and the actors
/// its own token named before it.
fn actor_of(claims: AccessTokenClaims) -> Result<Actor, GrantError> {
    let actor = Actor {
        sub: claims.sub,
        act: claims.act.map(Box::new),
    };
    if actor.depth() > MAX_ACTORS {
        return Err(GrantError::invalid_grant(format!(
            "actor_token: a delegation chain holds at most {MAX_ACTORS} actors"
        )));
    }
    Ok(actor)
}

/// What the subject may hold: for a person, what the policies give their subject
/// names; for a client's own token, what the policies give `client:<id>` and the scopes
/// it is registered with; for a machine, what the policies give its name.
async fn subject_scopes(
    issuer: &Issuer<'_>,
    connectors: &Connectors,
    client: &Client,
    subject: &Subject,
) -> Result<Vec<Held>, GrantError> {
    let policies = &issuer.config.exchange.policies;
    let subject = match subject {
        Subject::Keyward(valid) => valid,
        Subject::Machine(machine) => {
            return Ok(policy::held_scopes(
                policies,
                std::slice::from_ref(&machine.subject),
            ));
        }
        Subject::Person { user, .. } => return person_scopes(issuer, connectors, user).await,
    };
    match &subject.user {
        Some(user) => person_scopes(issuer, connectors, user).await,
        None => {
            let name = policy::client_subject(&client.client_id);
            let mut held = policy::held_scopes(policies, std::slice::from_ref(&name));
            held.extend(client.scopes.iter().map(|scope| Held {
                scope: scope.to_owned(),
                source: "client registration".into(),
                subject: name.clone(),
            }));
            Ok(held)
        }
    }
}

/// What the policies give a person's subject names.
async fn person_scopes(
    issuer: &Issuer<'_>,
    connectors: &Connectors,
    user: &User,
) -> Result<Vec<Held>, GrantError> {
    let password = connectors.password_login().map(|c| c.id.as_str());
    let names = policy::user_subjects(
        issuer.store,
        user,
        password,
        issuer.now(),
        issuer.config.groups_max_age,
    )
    .await?;
    Ok(policy::held_scopes(
        &issuer.config.exchange.policies,
        &names,
    ))
}

/// The requested scopes the subject holds; `invalid_scope` when it holds none of
/// them. Nothing requested, nothing granted.
fn granted_scope(held: &[Held], requested: Option<&ScopeSet>) -> Result<ScopeSet, GrantError> {
    let Some(requested) = requested.filter(|r| !r.is_empty()) else {
        return Ok(ScopeSet::default());
    };
    let granted = policy::grantable(held, requested);
    if granted.is_empty() {
        return Err(GrantError::refused(
            ErrorCode::InvalidScope,
            format!("the subject holds none of the requested scopes: {requested}"),
        ));
    }
    Ok(granted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(scopes: &[&str]) -> Vec<Held> {
        scopes
            .iter()
            .map(|s| Held {
                scope: (*s).to_owned(),
                source: "policies[0]".into(),
                subject: "user:alice".into(),
            })
            .collect()
    }

    #[test]
    fn scopes_are_granted_as_far_as_they_are_held() {
        let held = held(&["queue:create-task:proj-infra/*", "secrets:get:infra/db"]);
        let ask = |s: &str| granted_scope(&held, Some(&ScopeSet::parse(s).unwrap()));
        assert_eq!(
            ask("queue:create-task:proj-infra/build secrets:get:prod/x")
                .unwrap()
                .to_string(),
            "queue:create-task:proj-infra/build"
        );
        assert!(matches!(
            ask("secrets:get:prod/x"),
            Err(GrantError::Refused {
                code: ErrorCode::InvalidScope,
                ..
            })
        ));
        assert!(granted_scope(&held, None).unwrap().is_empty());
        assert!(ask("").unwrap().is_empty());
    }

    #[test]
    fn actor_chains_nest_and_are_bounded() {
        let claims = |sub: &str, act: Option<Actor>| AccessTokenClaims {
            iss: "https://id.example".into(),
            sub: sub.into(),
            aud: "svc".into(),
            exp: 2,
            iat: 1,
            jti: "j".into(),
            client_id: "svc".into(),
            scope: String::new(),
            auth_time: None,
            gid: None,
            act,
            client_tag: None,
        };
        let first = actor_of(claims("svc-a", None)).unwrap();
        assert_eq!(first.chain(), ["svc-a"]);
        let second = actor_of(claims("svc-b", Some(first))).unwrap();
        assert_eq!(second.chain(), ["svc-b", "svc-a"]);
        let mut chain = second;
        for i in 0..3 {
            chain = actor_of(claims(&format!("svc-{i}"), Some(chain))).unwrap();
        }
        assert_eq!(chain.depth(), MAX_ACTORS);
        assert!(actor_of(claims("one-too-many", Some(chain))).is_err());
    }
}
