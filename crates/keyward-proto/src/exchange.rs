//! OAuth 2.0 Token Exchange (RFC 8693): the request's parameters, the token type
//! identifiers, the `act` (actor) claim, and the wildcard grammar of exchanged scopes.
//!
//! The grammar is Taskcluster's: a held scope ending in `*` satisfies every scope that
//! starts with what precedes the `*` (`queue:create-task:*` satisfies
//! `queue:create-task:proj/x`, and `*` alone satisfies everything); any other scope
//! satisfies only itself. Nothing else is special, so that a reader can tell what a
//! scope grants by looking at it.

use serde::{Deserialize, Serialize};

use crate::scope::ScopeSet;

/// The wire name of the grant (RFC 8693 §2.1).
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Token type identifiers (RFC 8693 §3).
pub mod token_type {
    /// An OAuth 2.0 access token.
    pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
    /// An OAuth 2.0 refresh token.
    pub const REFRESH_TOKEN: &str = "urn:ietf:params:oauth:token-type:refresh_token";
    /// An OpenID Connect ID token.
    pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
    /// A JWT (RFC 7519).
    pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
}

/// The most audiences or resources one request may name.
pub const MAX_TARGETS: usize = 8;

/// A token exchange request (RFC 8693 §2.1). The tokens are secrets: `Debug` leaves
/// them out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TokenExchangeRequest {
    /// The token that says who the new token is about.
    pub subject_token: String,
    /// What kind of token `subject_token` is ([`token_type`]).
    pub subject_token_type: String,
    /// The token of the party that acts for the subject, if any.
    pub actor_token: Option<String>,
    /// What kind of token `actor_token` is; present exactly when it is.
    pub actor_token_type: Option<String>,
    /// Logical names of the services the new token is for (may repeat).
    pub audience: Vec<String>,
    /// URIs of the services the new token is for (RFC 8707; may repeat).
    pub resource: Vec<String>,
    /// The scopes wanted.
    pub scope: Option<ScopeSet>,
    /// The kind of token wanted; only an access token is issued.
    pub requested_token_type: Option<String>,
}

impl std::fmt::Debug for TokenExchangeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenExchangeRequest")
            .field("subject_token_type", &self.subject_token_type)
            .field("actor_token_type", &self.actor_token_type)
            .field("audience", &self.audience)
            .field("resource", &self.resource)
            .field("scope", &self.scope)
            .field("requested_token_type", &self.requested_token_type)
            .finish_non_exhaustive()
    }
}

impl TokenExchangeRequest {
    /// Reads the request from the decoded form pairs of a token request. `audience`
    /// and `resource` may repeat (at most [`MAX_TARGETS`] of each); any other parameter
    /// given twice, a missing subject, an actor token without its type (or the other way
    /// round), or a requested token type other than an access token is an
    /// `invalid_request`, described by the error.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
    ) -> Result<Self, String> {
        let mut request = Self::default();
        let mut subject_token = None;
        let mut subject_token_type = None;
        let mut seen = std::collections::HashSet::new();
        for (key, value) in pairs {
            let repeatable = matches!(key.as_ref(), "audience" | "resource");
            if !repeatable && !seen.insert(key.clone()) {
                let key: String = key.chars().take(40).collect();
                return Err(format!("parameter {key:?} is repeated"));
            }
            let value = value.into_owned();
            match key.as_ref() {
                "subject_token" => subject_token = Some(value),
                "subject_token_type" => subject_token_type = Some(value),
                "actor_token" => request.actor_token = Some(value),
                "actor_token_type" => request.actor_token_type = Some(value),
                "audience" => request.audience.push(value),
                "resource" => request.resource.push(value),
                "scope" => {
                    request.scope = Some(ScopeSet::parse(&value).map_err(|e| e.to_string())?);
                }
                "requested_token_type" => request.requested_token_type = Some(value),
                _ => {}
            }
        }
        if request.audience.len() > MAX_TARGETS || request.resource.len() > MAX_TARGETS {
            return Err(format!(
                "at most {MAX_TARGETS} audience and {MAX_TARGETS} resource parameters"
            ));
        }
        request.subject_token = subject_token
            .filter(|t| !t.is_empty())
            .ok_or("subject_token is required")?;
        request.subject_token_type = subject_token_type
            .filter(|t| !t.is_empty())
            .ok_or("subject_token_type is required")?;
        match (&request.actor_token, &request.actor_token_type) {
            (Some(_), None) => return Err("actor_token_type is required with actor_token".into()),
            (None, Some(_)) => return Err("actor_token_type without actor_token".into()),
            _ => {}
        }
        if let Some(wanted) = &request.requested_token_type
            && wanted != token_type::ACCESS_TOKEN
        {
            return Err(format!(
                "requested_token_type: only {} is issued",
                token_type::ACCESS_TOKEN
            ));
        }
        Ok(request)
    }

    /// Every target named, audiences first, each once.
    pub fn targets(&self) -> Vec<&str> {
        let mut targets: Vec<&str> = Vec::new();
        for target in self.audience.iter().chain(&self.resource) {
            if !targets.contains(&target.as_str()) {
                targets.push(target);
            }
        }
        targets
    }
}

/// Whether holding scope `held` allows scope `wanted`: `held` is `wanted`, or ends in
/// `*` and `wanted` starts with what comes before it.
pub fn satisfies(held: &str, wanted: &str) -> bool {
    match held.strip_suffix('*') {
        Some(prefix) => wanted.starts_with(prefix),
        None => held == wanted,
    }
}

/// Whether any of `held` allows `wanted`.
pub fn any_satisfies<'a>(held: impl IntoIterator<Item = &'a str>, wanted: &str) -> bool {
    held.into_iter().any(|h| satisfies(h, wanted))
}

/// The `act` claim (RFC 8693 §4.1): who acts for the token's subject. A nested `act`
/// names the party that acted before, outermost first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Actor {
    /// The actor's subject.
    pub sub: String,
    /// The actor before this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// The chain of actors, outermost first, as `sub` values.
    pub fn chain(&self) -> Vec<&str> {
        let mut chain = vec![self.sub.as_str()];
        let mut next = self.act.as_deref();
        while let Some(actor) = next {
            chain.push(&actor.sub);
            next = actor.act.as_deref();
        }
        chain
    }

    /// How many actors the chain holds.
    pub fn depth(&self) -> usize {
        self.chain().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn pairs(text: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
        url::form_urlencoded::parse(text.as_bytes()).collect()
    }

    #[test]
    fn wildcards_match_prefixes_and_nothing_else() {
        assert!(satisfies("queue:create-task:*", "queue:create-task:proj/x"));
        assert!(satisfies("queue:create-task:*", "queue:create-task:"));
        assert!(satisfies("*", "anything:at:all"));
        assert!(satisfies("secrets:get:infra/db", "secrets:get:infra/db"));
        assert!(!satisfies("secrets:get:infra/db", "secrets:get:infra/db2"));
        assert!(!satisfies("queue:create-task:*", "queue:create-tas"));
        assert!(!satisfies(
            "queue:create-task:proj/x",
            "queue:create-task:*"
        ));
        // A `*` in the middle is an ordinary character.
        assert!(!satisfies("a*b", "axb"));
        assert!(satisfies("a*b", "a*b"));
        // A wanted wildcard is satisfied only by a held one at least as wide.
        assert!(satisfies("queue:*", "queue:create-task:*"));
        assert!(any_satisfies(["x", "y:*"], "y:z"));
        assert!(!any_satisfies(["x", "y:*"], "z"));
    }

    #[test]
    fn a_request_is_read_with_repeated_targets() {
        let request = TokenExchangeRequest::from_pairs(pairs(
            "grant_type=x&subject_token=abc&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &audience=a&audience=b&resource=https%3A%2F%2Fr.example&audience=a&scope=s1+s2:*",
        ))
        .unwrap();
        assert_eq!(request.subject_token, "abc");
        assert_eq!(request.subject_token_type, token_type::ACCESS_TOKEN);
        assert_eq!(request.targets(), ["a", "b", "https://r.example"]);
        assert_eq!(request.scope.unwrap().to_string(), "s1 s2:*");
        assert!(
            !format!(
                "{:?}",
                TokenExchangeRequest::from_pairs(pairs("subject_token=abc&subject_token_type=t"))
                    .unwrap()
            )
            .contains("abc")
        );
    }

    #[test]
    fn bad_requests_are_described() {
        for (form, error) in [
            ("subject_token_type=t", "subject_token is required"),
            ("subject_token=a", "subject_token_type is required"),
            (
                "subject_token=&subject_token_type=t",
                "subject_token is required",
            ),
            (
                "subject_token=a&subject_token_type=t&subject_token=b",
                "repeated",
            ),
            (
                "subject_token=a&subject_token_type=t&actor_token=b",
                "actor_token_type is required",
            ),
            (
                "subject_token=a&subject_token_type=t&actor_token_type=b",
                "without actor_token",
            ),
            (
                "subject_token=a&subject_token_type=t&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Arefresh_token",
                "only urn:ietf:params:oauth:token-type:access_token",
            ),
            (
                "subject_token=a&subject_token_type=t&scope=%22",
                "scope token",
            ),
        ] {
            let err = TokenExchangeRequest::from_pairs(pairs(form)).unwrap_err();
            assert!(err.contains(error), "{form}: {err}");
        }
        let many = format!(
            "subject_token=a&subject_token_type=t{}",
            "&audience=x".repeat(MAX_TARGETS + 1)
        );
        assert!(TokenExchangeRequest::from_pairs(pairs(&many)).is_err());
    }

    #[test]
    fn actors_nest_outermost_first() {
        let actor: Actor =
            serde_json::from_str(r#"{"sub":"svc-b","act":{"sub":"svc-a"}}"#).unwrap();
        assert_eq!(actor.chain(), ["svc-b", "svc-a"]);
        assert_eq!(actor.depth(), 2);
        assert_eq!(
            serde_json::to_string(&Actor {
                sub: "x".into(),
                act: None
            })
            .unwrap(),
            r#"{"sub":"x"}"#
        );
    }
}
