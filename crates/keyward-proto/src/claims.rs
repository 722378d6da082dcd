//! Claims of the JWTs keyward issues: access tokens (RFC 9068 §2.2) and ID tokens
//! (OpenID Connect Core §2, §5.1).

use serde::{Deserialize, Serialize};

/// The claims of a JWT access token (RFC 9068 §2.2).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user's stable id, the client id for client credentials, or the
    /// machine subject a trusted issuer vouched for (token exchange).
    pub sub: String,
    /// Audience: the client the token was issued to, or the services a token exchange
    /// named.
    pub aud: Audience,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time.
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Space-separated granted scope.
    pub scope: String,
    /// When the user authenticated (absent for client credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// keyward's grant id, which ties the token to its authorization for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// Who acts for the subject (RFC 8693 §4.1), on a token made by token exchange
    /// with an actor token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<crate::exchange::Actor>,
    /// For a token without a grant: a tag of the client record it was issued under, so
    /// that it dies with that record (opaque to everyone but its issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_tag: Option<String>,
}

/// The `aud` claim (RFC 7519 §4.1.3): one audience, written as a string, or several,
/// written as an array.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// The audience of `targets` (one is a string, more an array).
    pub fn of(mut targets: Vec<String>) -> Self {
        if targets.len() == 1 {
            Self::One(targets.remove(0))
        } else {
            Self::Many(targets)
        }
    }

    /// Whether `name` is one of the audiences.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Self::One(one) => one == name,
            Self::Many(many) => many.iter().any(|a| a == name),
        }
    }

    /// Every audience.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let slice: &[String] = match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many,
        };
        slice.iter().map(String::as_str)
    }
}

impl From<String> for Audience {
    fn from(one: String) -> Self {
        Self::One(one)
    }
}

impl From<&str> for Audience {
    fn from(one: &str) -> Self {
        Self::One(one.to_owned())
    }
}

/// Profile and email claims of a user, released by scope (OpenID Connect Core §5.4).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserClaims {
    /// `profile`: full name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `profile`: the login name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// `email`: the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `email`: whether the address was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// `groups`: the groups the upstream providers of the user's linked identities
    /// report (GitHub organisations `org` and teams `org:team`, an OpenID provider's
    /// `groups` claim), as of each identity's last sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

/// The claims of an ID token (OpenID Connect Core §2).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// The client.
    pub aud: String,
    /// Expiry.
    pub exp: i64,
    /// Issue time.
    pub iat: i64,
    /// When the user authenticated.
    pub auth_time: i64,
    /// The nonce of the authorization request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Left half of the access token's hash (§3.1.3.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// The authorized party.
    pub azp: String,
    /// Profile and email claims.
    #[serde(flatten)]
    pub user: UserClaims,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_audience_is_a_string_several_an_array() {
        let one = Audience::of(vec!["api".into()]);
        assert_eq!(serde_json::to_string(&one).unwrap(), r#""api""#);
        let two = Audience::of(vec!["a".into(), "b".into()]);
        assert_eq!(serde_json::to_string(&two).unwrap(), r#"["a","b"]"#);
        assert!(two.contains("b") && !two.contains("c"));
        let read: Audience = serde_json::from_str(r#"["x"]"#).unwrap();
        assert!(read.contains("x"));
        assert_eq!(read.iter().collect::<Vec<_>>(), ["x"]);
    }
}
