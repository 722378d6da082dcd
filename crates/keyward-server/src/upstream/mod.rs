//! Upstream identity providers ("connectors", Taskcluster's "login strategies"): the
//! other half of keyward as a broker. Each one turns a person's visit to a provider into
//! an [`UpstreamIdentity`]; [`crate::accounts`] decides which account that is.
//!
//! - [`oidc`]: any OpenID Connect provider, found by discovery (code flow with PKCE,
//!   state and nonce; ID tokens verified against the provider's JWKS).
//! - [`github`]: GitHub's OAuth web flow and REST API (or GitHub Enterprise's).
//! - [`email`]: one-time links sent over SMTP.
//! - [`trusted`]: not a connector: the `[[trusted_issuers]]` whose JWTs name machines
//!   in a token exchange (found by discovery, keys from their JWKS).
//!
//! The password connector needs nothing here: it is the local users of the server core.
//! Sign-ins in progress live in the store ([`crate::domain::ConnectorLogin`]), so any
//! replica can finish what another started; what is cached here (discovery documents,
//! JWKS, SMTP connections) each replica fetches for itself.
//!
//! A provider is not trusted with keyward's resources: [`guard`] caps every answer at
//! 1 MiB and keeps keyward off plain http (but to this machine) and off link-local and
//! metadata addresses, whatever a discovery document or DNS says; text from a provider
//! reaches logs and pages only through [`printable`].

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConnectorConfig, ConnectorKind};

pub mod email;
pub mod github;
pub mod guard;
pub mod oidc;
pub mod trusted;

/// How long keyward waits for a provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

/// What a provider says about the person who signed in there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamIdentity {
    /// The provider's stable id for the person: never reassigned, unlike a login name
    /// or an address.
    pub subject: String,
    /// An address, if the provider gave one.
    pub email: Option<String>,
    /// Whether the provider vouches for the address.
    pub email_verified: bool,
    /// A display name.
    pub name: Option<String>,
    /// A login name at the provider.
    pub username: Option<String>,
    /// Groups (OIDC `groups`; GitHub organisations `org` and teams `org:team`).
    pub groups: Vec<String>,
}

/// Why a sign-in at a provider failed. The messages name the provider's endpoint and
/// what went wrong, never a token or a secret. Whatever text came from the provider is
/// shown through [`printable`], so that it cannot forge log lines or page layout.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The provider could not be reached, or its answer could not be read.
    #[error("cannot reach {url}")]
    Unreachable {
        /// The URL requested.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The provider answered with an unexpected HTTP status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL requested.
        url: String,
        /// The status.
        status: u16,
    },
    /// The provider's answer did not have the expected shape.
    #[error("unexpected answer from {url}: {}", printable(.detail))]
    Malformed {
        /// The URL requested.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The provider refused, with an OAuth error code (`access_denied`, `invalid_grant`, …).
    #[error("the provider refused: {}{}", printable(.error), .description.as_deref().map(|d| format!(" ({})", printable(d))).unwrap_or_default())]
    Refused {
        /// The OAuth error code.
        error: String,
        /// The provider's description.
        description: Option<String>,
    },
    /// The OpenID Connect discovery document could not be used.
    #[error("discovery of {issuer} failed: {}", printable(.detail))]
    Discovery {
        /// The issuer.
        issuer: String,
        /// What went wrong.
        detail: String,
    },
    /// The ID token was not accepted (signature, issuer, audience, expiry, nonce).
    #[error("the ID token was not accepted: {}", printable(.0))]
    IdToken(String),
    /// The provider vouched for the person, but keyward's rules do not let them in
    /// (not a member of an allowed GitHub organisation).
    #[error("{}", printable(.0))]
    NotAllowed(String),
    /// A message could not be built or sent.
    #[error("cannot send mail: {0}")]
    Mail(String),
}

/// Text from a provider, fit for a log line or a page: control characters (line
/// breaks included) escaped, at most 300 characters.
pub fn printable(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(300) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl UpstreamError {
    /// Whether the person can do something about it (as opposed to an outage or a
    /// misconfiguration), so that the page says what happened rather than "try later".
    pub fn is_user_facing(&self) -> bool {
        matches!(self, Self::NotAllowed(_) | Self::Refused { .. })
    }
}

/// A connector with what it needs at run time.
pub struct Connector {
    /// Its configuration.
    pub config: ConnectorConfig,
    /// The provider behind it.
    pub provider: Provider,
}

/// The run-time half of a connector: what keyward talks to. (The password connector has
/// none: it is the sign-in form and the users table, and is not in [`Connectors`].)
pub enum Provider {
    /// An OpenID Connect provider.
    Oidc(oidc::OidcProvider),
    /// GitHub.
    Github(github::GithubProvider),
    /// Emailed links.
    Email(email::Mailer),
}

/// Every configured connector: the upstream ones (OpenID Connect, GitHub, email), in
/// configuration order, and the local password. The server holds one set at a time and
/// swaps in a new one when the configuration is reloaded
/// ([`crate::state::AppState::reload`]).
pub struct Connectors {
    list: Vec<Arc<Connector>>,
    /// The password connector, when enabled.
    password: Option<ConnectorConfig>,
    /// Every connector's id and display name, the password connector's too.
    names: Vec<(String, String)>,
    /// The issuers of machine identities trusted in token exchange.
    trusted: trusted::TrustedIssuers,
}

impl Connectors {
    /// Builds the connectors of `config`. Nothing is fetched yet: discovery happens at
    /// the first sign-in, so that a provider that is down does not stop keyward.
    pub fn new(config: &Config) -> Result<Self, UpstreamError> {
        let http = http_client()?;
        let mut list = Vec::new();
        for c in &config.connectors {
            let provider = match &c.kind {
                ConnectorKind::Oidc(settings) => {
                    Provider::Oidc(oidc::OidcProvider::new(settings.clone(), http.clone()))
                }
                ConnectorKind::Github(settings) => {
                    Provider::Github(github::GithubProvider::new(settings.clone(), http.clone()))
                }
                ConnectorKind::Email(settings) => {
                    Provider::Email(email::Mailer::new(settings, config)?)
                }
                ConnectorKind::Password => continue,
            };
            list.push(Arc::new(Connector {
                config: c.clone(),
                provider,
            }));
        }
        let names = config
            .connectors
            .iter()
            .map(|c| (c.id.clone(), c.name.clone()))
            .collect();
        let trusted = trusted::TrustedIssuers::new(&config.exchange.trusted_issuers, &http);
        Ok(Self {
            list,
            password: config.password_login().cloned(),
            names,
            trusted,
        })
    }

    /// The password connector, when enabled.
    pub fn password_login(&self) -> Option<&ConnectorConfig> {
        self.password.as_ref()
    }

    /// The ids of the enabled connectors, the password one included, in configuration
    /// order (for logs).
    pub fn enabled_ids(&self) -> Vec<&str> {
        self.names
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| {
                self.enabled(id).is_some() || self.password.as_ref().is_some_and(|p| p.id == *id)
            })
            .collect()
    }

    /// The issuers of machine identities trusted in token exchange.
    pub fn trusted_issuers(&self) -> &trusted::TrustedIssuers {
        &self.trusted
    }

    /// An enabled connector by id.
    pub fn enabled(&self, id: &str) -> Option<Arc<Connector>> {
        self.list
            .iter()
            .find(|c| c.config.id == id && c.config.enabled)
            .cloned()
    }

    /// The enabled connectors, in configuration order.
    pub fn all_enabled(&self) -> impl Iterator<Item = &Arc<Connector>> {
        self.list.iter().filter(|c| c.config.enabled)
    }

    /// A connector's display name by id, enabled or not (for identities linked through
    /// a connector that was disabled since).
    pub fn name_of<'a>(&'a self, id: &'a str) -> &'a str {
        self.names
            .iter()
            .find(|(known, _)| known == id)
            .map_or(id, |(_, name)| name.as_str())
    }
}

/// The HTTP client for providers: no redirects followed (OpenID Connect endpoints must
/// answer directly, and following them invites request forgery), bounded in time, and
/// never connecting to a metadata address whatever a name resolves to
/// ([`guard::GuardedResolver`]).
fn http_client() -> Result<reqwest::Client, UpstreamError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(std::sync::Arc::new(guard::GuardedResolver))
        .timeout(PROVIDER_TIMEOUT)
        .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| UpstreamError::Unreachable {
            url: "(HTTP client set-up)".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attack: forging log lines. A provider's error description with a line break
    /// would have started a new, made-up line in keyward's log.
    #[test]
    fn provider_text_cannot_break_a_log_line() {
        let refused = UpstreamError::Refused {
            error: "access_denied\nlevel=INFO msg=\"admin signed in\"".into(),
            description: Some("a\r\nb\u{1b}[31m".into()),
        };
        let text = refused.to_string();
        assert!(
            !text.contains('\n') && !text.contains('\r') && !text.contains('\u{1b}'),
            "{text}"
        );
        assert!(text.contains("access_denied\\nlevel=INFO"), "{text}");
        assert_eq!(printable(&"x".repeat(1000)).len(), 300);
        assert_eq!(printable("Ünïcode ok"), "Ünïcode ok");
    }
}
