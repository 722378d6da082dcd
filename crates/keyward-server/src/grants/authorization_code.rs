//! The authorization code grant (RFC 6749 §4.1.3) with PKCE S256 (RFC 7636 §4.6): a code
//! is redeemed once, by the client it was issued to, with the redirect URI of the
//! request when it named one and the verifier of its challenge; a code presented again
//! revokes everything issued with it (RFC 9700 §4.5).

use keyward_proto::OpaqueToken;
use keyward_proto::pkce::{CodeChallenge, CodeVerifier};
use keyward_proto::token::TokenResponse;

use super::{GrantError, first_tokens, live_grant};
use crate::domain::{Client, CodeRedemption};
use crate::issuer::Issuer;

/// Redeems `code` for `client`.
pub async fn redeem(
    issuer: &Issuer<'_>,
    client: &Client,
    code: OpaqueToken,
    redirect_uri: Option<String>,
    verifier: Option<String>,
) -> Result<TokenResponse, GrantError> {
    let store = issuer.store;
    let at = issuer.now();
    let record = match store.redeem_code(&code.hash(), at).await? {
        CodeRedemption::Redeemed(record) => record,
        CodeRedemption::AlreadyUsed(record) => {
            if store.revoke_grant(&record.grant_id).await? {
                tracing::warn!(client_id = %client.client_id, grant_id = %record.grant_id, "authorization code replayed; grant revoked");
            }
            return Err(GrantError::invalid_grant(
                "authorization code already used; the tokens issued with it are revoked",
            ));
        }
        CodeRedemption::NotFound => {
            return Err(GrantError::invalid_grant("unknown authorization code"));
        }
    };
    if record.client_id != client.client_id {
        return Err(GrantError::invalid_grant(
            "authorization code was issued to another client",
        ));
    }
    if record.expires_at < at {
        return Err(GrantError::invalid_grant("authorization code expired"));
    }
    match (&redirect_uri, record.redirect_uri_given) {
        (Some(uri), _) if *uri != record.redirect_uri => {
            return Err(GrantError::invalid_grant(
                "redirect_uri differs from the authorization request",
            ));
        }
        (None, true) => return Err(GrantError::invalid_request("redirect_uri is required")),
        _ => {}
    }
    let verifier =
        verifier.ok_or_else(|| GrantError::invalid_request("code_verifier is required"))?;
    let verifier =
        CodeVerifier::new(verifier).map_err(|e| GrantError::invalid_request(e.to_string()))?;
    let challenge = CodeChallenge::parse(&record.code_challenge)
        .map_err(|e| GrantError::invalid_grant(e.to_string()))?;
    if !challenge.verify(&verifier) {
        return Err(GrantError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    let (grant, user) = live_grant(issuer, &record.grant_id).await?;
    first_tokens(issuer, client, &grant, &user, grant.nonce.clone()).await
}
