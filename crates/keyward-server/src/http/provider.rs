//! Sign-ins at upstream providers, started from the login page or the account page:
//! leaving for the provider (the state, nonce and PKCE verifier kept in the store for
//! the way back), mailing a sign-in link, and the pages around them.

use std::net::IpAddr;

use axum::http::StatusCode;
use axum::response::Response;
use keyward_proto::pkce::CodeVerifier;
use keyward_proto::{OpaqueToken, TokenHash};

use super::browser::see_other;
use super::page_error::PageError;
use crate::domain::{ConnectorLogin, ConnectorPurpose, secs};
use crate::state::AppState;
use crate::store::IdentityKey;
use crate::throttle;
use crate::upstream::email::LINK_TTL;
use crate::upstream::{Connector, Provider, UpstreamError};

/// How long a sign-in at a provider may take.
const PROVIDER_LOGIN_TTL: i64 = 15 * 60;

/// The enabled connectors as the login and account pages offer them: the providers a
/// browser is sent to (a button each), and the emailed-link connectors (a form each).
pub(super) fn connector_buttons(
    state: &AppState,
) -> (Vec<minijinja::Value>, Vec<minijinja::Value>) {
    let mut providers = Vec::new();
    let mut email_forms = Vec::new();
    for connector in state.connectors().all_enabled() {
        let item = minijinja::context! {
            id => connector.config.id,
            name => connector.config.name,
            kind => connector.config.kind.type_name(),
            initial => connector.config.name.chars().next().map(|c| c.to_uppercase().to_string()),
        };
        match connector.provider {
            Provider::Oidc(_) | Provider::Github(_) => providers.push(item),
            Provider::Email(_) => email_forms.push(item),
        }
    }
    (providers, email_forms)
}

/// The page for a connector that does not exist or is turned off.
pub(super) fn not_found() -> PageError {
    PageError::new(
        StatusCode::NOT_FOUND,
        "Unknown sign-in method",
        "This way of signing in does not exist or is turned off.",
    )
}

/// Starts a sign-in at an upstream provider: stores what the way back needs and sends
/// the browser to the provider; with `fresh`, an OpenID provider is asked to
/// authenticate the person again (`prompt=login`) rather than reuse its session.
pub(super) async fn to_provider(
    state: &AppState,
    connector: &Connector,
    purpose: ConnectorPurpose,
    browser_hash: TokenHash,
    fresh: bool,
) -> Result<Response, PageError> {
    let token = OpaqueToken::generate();
    let nonce = keyward_proto::secret::random_urlsafe(24);
    let verifier = CodeVerifier::generate();
    let redirect_uri = state.config().connector_redirect_uri(&connector.config.id);
    let url = match &connector.provider {
        Provider::Oidc(provider) => provider
            .authorization_url(&redirect_uri, token.secret(), &nonce, &verifier, fresh)
            .await
            .map_err(|e| provider_unavailable(connector, e))?,
        Provider::Github(provider) => {
            provider.authorization_url(&redirect_uri, token.secret(), &verifier)
        }
        Provider::Email(_) => return Err(not_found()),
    };
    let at = state.now();
    state
        .store()
        .insert_connector_login(&ConnectorLogin {
            state_hash: token.hash(),
            connector_id: connector.config.id.clone(),
            purpose,
            browser_hash,
            nonce: Some(nonce),
            code_verifier: Some(verifier.secret().to_owned()),
            email: None,
            created_at: at,
            expires_at: at + PROVIDER_LOGIN_TTL,
        })
        .await?;
    Ok(see_other(url.as_str()))
}

/// Mails a sign-in link to `address`, unless that address cannot use one (nobody holds
/// it and the connector creates no accounts) or asked too often. The caller answers the
/// same in every case, and the message goes out in the background, so neither the page
/// nor its timing tells whether an address is known.
pub(super) async fn send_email_link(
    state: &AppState,
    connector: &std::sync::Arc<Connector>,
    address: &str,
    purpose: ConnectorPurpose,
    browser_hash: TokenHash,
    client_addr: Option<IpAddr>,
) -> Result<(), PageError> {
    let store = state.store();
    let at = state.now();
    if !throttle::email_link_allowed(store, address, client_addr, at).await? {
        state.metrics().increment(
            "keyward_login_failures_total",
            &[("reason", "email_throttled")],
        );
        tracing::warn!(connector = %connector.config.id, client = %client_addr.map(|a| a.to_string()).unwrap_or_default(), "sign-in link not sent: too many asked for");
        return Ok(());
    }
    let may_use = matches!(purpose, ConnectorPurpose::Link(_))
        || connector.config.create_accounts
        || store
            .get_identity(IdentityKey {
                connector_id: &connector.config.id,
                subject: address,
            })
            .await?
            .is_some()
        || (connector.config.trust_email
            && !store
                .find_users_by_verified_email(address)
                .await?
                .is_empty());
    if !may_use {
        tracing::info!(connector = %connector.config.id, "sign-in link not sent: unknown address");
        return Ok(());
    }
    let token = OpaqueToken::generate();
    store
        .insert_connector_login(&ConnectorLogin {
            state_hash: token.hash(),
            connector_id: connector.config.id.clone(),
            purpose,
            browser_hash,
            nonce: None,
            code_verifier: None,
            email: Some(address.to_owned()),
            created_at: at,
            expires_at: at + secs(LINK_TTL),
        })
        .await?;
    // The token is base64url: nothing in it needs escaping.
    let link = format!(
        "{}?token={}",
        state.config().connector_redirect_uri(&connector.config.id),
        token.secret()
    );
    let connector = connector.clone();
    let address = address.to_owned();
    tokio::spawn(async move {
        if let Provider::Email(mailer) = &connector.provider
            && let Err(e) = mailer.send_link(&address, &link).await
        {
            tracing::error!(connector = %connector.config.id, error = %e, "sign-in link not delivered");
        }
    });
    Ok(())
}

/// The page after a link was asked for, the same whether or not one was sent.
pub(super) fn email_sent_page(state: &AppState, address: &str, back: Option<&str>) -> Response {
    state.pages().render(
        StatusCode::OK,
        "email_sent.html",
        minijinja::context! {
            email => address,
            minutes => LINK_TTL.as_secs() / 60,
            back => back,
        },
    )
}

/// A redirect to the account page with a notice.
pub(super) fn to_account(state: &AppState, notice: &str) -> Response {
    see_other(&format!(
        "{}/account?notice={notice}",
        state.config().base_path()
    ))
}

/// The page for a provider that cannot be reached (502), logged once.
pub(super) fn provider_unavailable(connector: &Connector, error: UpstreamError) -> PageError {
    tracing::warn!(connector = %connector.config.id, error = %error, "provider unavailable");
    PageError::new(
        StatusCode::BAD_GATEWAY,
        "Provider unavailable",
        format!(
            "{} cannot be reached right now. Try again in a moment, or sign in another way.",
            connector.config.name
        ),
    )
}
