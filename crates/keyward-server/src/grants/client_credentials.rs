//! The client credentials grant (RFC 6749 §4.4): a confidential client asks for an
//! access token about itself, with scopes of its own (never a user's: `openid`,
//! `profile`, `email`, `offline_access` are not for it).

use keyward_proto::ErrorCode;
use keyward_proto::ScopeSet;
use keyward_proto::token::TokenResponse;

use super::GrantError;
use crate::domain::{Client, ClientAuth};
use crate::issuer::{self, Issuer};

/// The scopes only a user can grant.
const USER_SCOPES: [&str; 4] = ["openid", "offline_access", "profile", "email"];

/// Issues `client` an access token for `scope` (all it may have when `None`).
pub fn issue(
    issuer: &Issuer<'_>,
    client: &Client,
    auth: ClientAuth,
    scope: Option<ScopeSet>,
) -> Result<TokenResponse, GrantError> {
    if auth != ClientAuth::Secret {
        return Err(GrantError::refused(
            ErrorCode::UnauthorizedClient,
            "client_credentials needs a confidential client",
        ));
    }
    let scope = allowed_scope(client, scope)?;
    let (access, _) = issuer::access_token(issuer, client, &client.client_id, &scope, None)
        .map_err(issuer::IssueError::from)?;
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer".into(),
        expires_in: Some(issuer.config.access_token_ttl.as_secs()),
        refresh_token: None,
        id_token: None,
        scope,
        issued_token_type: None,
    })
}

/// The scope a client credentials token gets: what was asked for, if the client may
/// have all of it (else `invalid_scope`), or everything it may have but user scopes.
pub fn allowed_scope(client: &Client, requested: Option<ScopeSet>) -> Result<ScopeSet, GrantError> {
    let mut allowed = client.scopes.clone();
    for user_scope in USER_SCOPES {
        allowed.remove(user_scope);
    }
    match requested {
        Some(requested) if !requested.is_subset(&allowed) => {
            let refused = requested.difference(&allowed);
            Err(GrantError::refused(
                ErrorCode::InvalidScope,
                format!("this client may not request: {refused}"),
            ))
        }
        Some(requested) => Ok(requested),
        None => Ok(allowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SigningAlg;

    fn client(scopes: &str) -> Client {
        Client {
            client_id: "svc".into(),
            name: "svc".into(),
            secret_hash: None,
            previous_secret: None,
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            grant_types: vec!["client_credentials".into()],
            scopes: ScopeSet::parse(scopes).unwrap(),
            skip_consent: false,
            introspect: false,
            id_token_alg: SigningAlg::ES256,
            created_at: 0,
        }
    }

    #[test]
    fn a_client_gets_its_own_scopes_never_a_users() {
        let svc = client("openid profile api:read api:write offline_access");
        assert_eq!(
            allowed_scope(&svc, None).unwrap().to_string(),
            "api:read api:write"
        );
        let narrowed = allowed_scope(&svc, Some(ScopeSet::parse("api:read").unwrap())).unwrap();
        assert_eq!(narrowed.to_string(), "api:read");
        for refused in ["openid", "api:admin", "api:read profile"] {
            let err = allowed_scope(&svc, Some(ScopeSet::parse(refused).unwrap())).unwrap_err();
            assert!(
                matches!(
                    err,
                    GrantError::Refused {
                        code: ErrorCode::InvalidScope,
                        ..
                    }
                ),
                "{refused}"
            );
        }
    }
}
