//! The account page (`/account`): who you are here, the identities linked to your
//! account (link another provider, unlink one, never the last way in), where you are
//! signed in (end any other session), and the applications you have authorised
//! (revoke each).
//!
//! Signing in to it is an ordinary login in progress of kind
//! [`LoginKind::Account`], so every connector works for it; its "client" is
//! [`console_client`](super::login::console_client), which never asks for consent. Every form carries the session's
//! CSRF token and answers with a redirect to the page and a notice.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keyward_proto::{ScopeSet, TokenHash};
use serde::Deserialize;

use super::browser::{Browser, csrf_matches, current_session};
use super::error::OAuthError;
use super::extract::{Body, ClientAddr};
use super::login::start_own_page_sign_in;
use super::page_error::{PageError, page_form};
use super::provider::{
    connector_buttons, email_sent_page, not_found, send_email_link, to_account, to_provider,
};
use super::routes::Routes;
use crate::domain::{ConnectorPurpose, LoginKind, Session, Unlink, User, utc_text};
use crate::state::AppState;
use crate::store::{IdentityKey, UserClient};
use crate::upstream::Provider;
use crate::upstream::email::normalize_address;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .get("/account", account_page)
        .post("/account/link/{connector}", link_start)
        .post("/account/unlink", unlink)
        .post("/account/sessions/end", end_session)
        .post("/account/apps/revoke", revoke_app)
}

/// What a notice code in `?notice=` says, and whether it is good news. Only these
/// fixed texts are ever shown: the query string cannot put words on the page.
fn notice_text(code: &str) -> Option<(bool, &'static str)> {
    Some(match code {
        "linked" => (true, "Linked. You can now sign in with it too."),
        "already-linked" => (true, "That identity was already linked to this account."),
        "held-by-another" => (
            false,
            "That identity is linked to another account. Sign in with it and unlink it there first.",
        ),
        "link-failed" => (false, "Linking did not work. Try again."),
        "disabled" => (false, "This account is disabled."),
        "unlinked" => (true, "Unlinked."),
        "unlink-missing" => (false, "That identity is not linked to this account."),
        "last-method" => (
            false,
            "That is the only way to sign in to this account. Link another one first.",
        ),
        "session-ended" => (true, "That browser is signed out."),
        "app-revoked" => (
            true,
            "Access revoked. The application must ask you again to use your account.",
        ),
        _ => return None,
    })
}

#[derive(Deserialize)]
struct PageQuery {
    notice: Option<String>,
}

async fn account_page(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let notice = query.ok().and_then(|Query(q)| q.notice);
    match current_session(&state, &headers).await? {
        Some((session, user)) => render(&state, &session, &user, notice.as_deref()).await,
        None => start_own_page_sign_in(&state, LoginKind::Account, addr, &headers).await,
    }
}

async fn render(
    state: &AppState,
    session: &Session,
    user: &User,
    notice: Option<&str>,
) -> Result<Response, PageError> {
    let store = state.store();
    let connectors = state.connectors();
    let at = state.now();
    let identities = store.list_identities(&user.id).await?;
    let password = user.password_hash.is_some() && connectors.password_login().is_some();
    let can_unlink = identities.len() > 1 || password;
    let identities: Vec<_> = identities
        .iter()
        .map(|i| {
            let label = i
                .username
                .clone()
                .or_else(|| i.email.clone())
                .unwrap_or_else(|| i.subject.clone());
            minijinja::context! {
                connector_id => i.connector_id,
                connector_name => connectors.name_of(&i.connector_id),
                subject => i.subject,
                label => label,
                last_used => utc_text(i.last_login_at),
                can_unlink => can_unlink,
            }
        })
        .collect();

    let (link_providers, link_emails) = connector_buttons(state);

    let sessions: Vec<_> = store
        .list_user_sessions(&user.id, at)
        .await?
        .iter()
        .map(|s| {
            minijinja::context! {
                id => s.id_hash.as_str(),
                current => s.id_hash == session.id_hash,
                browser => describe_user_agent(s.user_agent.as_deref()),
                method => connectors.name_of(&s.method),
                started => utc_text(s.created_at),
                ip => s.ip,
            }
        })
        .collect();

    let app_list = authorised_apps(state, user, at).await?;

    let notice = notice
        .and_then(notice_text)
        .map(|(ok, text)| minijinja::context! { ok => ok, text => text });
    Ok(state.pages().render(
        StatusCode::OK,
        "account.html",
        minijinja::context! {
            user => minijinja::context! {
                id => user.id,
                username => user.username,
                name => user.name,
                email => user.email,
                email_verified => user.email_verified,
            },
            csrf => session.csrf,
            notice => notice,
            password => password,
            identities => identities,
            link_providers => link_providers,
            link_emails => link_emails,
            sessions => sessions,
            apps => app_list,
        },
    ))
}

/// A short description of a browser from its `User-Agent`.
/// The applications `user` has authorised: active grants and remembered consents, by
/// client, with the scopes of all of them and the earliest date.
async fn authorised_apps(
    state: &AppState,
    user: &User,
    at: i64,
) -> Result<Vec<minijinja::Value>, PageError> {
    let store = state.store();
    let mut apps: BTreeMap<String, (ScopeSet, i64)> = BTreeMap::new();
    let mut add = |client_id: String, scope: &ScopeSet, since: i64| {
        let entry = apps
            .entry(client_id)
            .or_insert_with(|| (ScopeSet::default(), since));
        entry.0 = entry.0.union(scope);
        entry.1 = entry.1.min(since);
    };
    for grant in store.list_user_grants(&user.id, at).await? {
        add(grant.client_id.clone(), &grant.scope, grant.created_at);
    }
    for (client_id, scope, updated_at) in store.list_user_consents(&user.id).await? {
        add(client_id, &scope, updated_at);
    }
    let mut list = Vec::new();
    for (client_id, (scope, since)) in apps {
        // The Julia client and others are clients too; a removed client is gone.
        let Some(client) = store.get_client(&client_id).await? else {
            continue;
        };
        list.push(minijinja::context! {
            client_id => client_id,
            name => client.name,
            scopes => scope.to_string(),
            since => utc_text(since),
        });
    }
    Ok(list)
}

fn describe_user_agent(agent: Option<&str>) -> String {
    let Some(agent) = agent else {
        return "Unknown browser".into();
    };
    let browser = [
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("Chromium/", "Chromium"),
        ("HeadlessChrome/", "Chromium (headless)"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
        ("reqwest", "a program"),
    ]
    .iter()
    .find(|(marker, _)| agent.contains(marker))
    .map_or("Browser", |(_, name)| name);
    let system = [
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(marker, _)| agent.contains(marker))
    .map(|(_, name)| *name);
    match system {
        Some(system) => format!("{browser} on {system}"),
        None => browser.to_owned(),
    }
}

/// The signed-in session, for a form posted from the account page with its CSRF token.
async fn session_for_form(
    state: &AppState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(Session, User), PageError> {
    let (session, user) = current_session(state, headers).await?.ok_or_else(|| {
        PageError::new(
            StatusCode::UNAUTHORIZED,
            "Signed out",
            "Your session has ended. Open your account page and sign in again.",
        )
    })?;
    if !csrf_matches(&session.csrf, csrf) {
        return Err(PageError::bad_request(
            "Form expired",
            "The form was stale or forged. Open your account page and try again.",
        ));
    }
    Ok((session, user))
}

#[derive(Deserialize)]
struct LinkForm {
    csrf: String,
    email: Option<String>,
}

/// `POST /account/link/{connector}`: links another identity to the signed-in account.
async fn link_start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: LinkForm = page_form(body)?;
    let (_, user) = session_for_form(&state, &headers, &form.csrf).await?;
    let connector = state.connectors().enabled(&id).ok_or_else(not_found)?;
    let browser = Browser::of(&state, &headers);
    let browser_hash = TokenHash::of(&browser.value);
    let purpose = ConnectorPurpose::Link(user.id.clone());
    let back = format!("{}/account", state.config().base_path());
    let response = match &connector.provider {
        Provider::Oidc(_) | Provider::Github(_) => {
            to_provider(&state, &connector, purpose, browser_hash, false).await?
        }
        Provider::Email(_) => {
            let Some(address) = form.email.as_deref().and_then(normalize_address) else {
                return Err(PageError::bad_request(
                    "Invalid address",
                    "Enter a valid email address.",
                ));
            };
            send_email_link(&state, &connector, &address, purpose, browser_hash, addr).await?;
            email_sent_page(&state, &address, Some(&back))
        }
    };
    Ok(browser.set_if_new(&state, response))
}

#[derive(Deserialize)]
struct UnlinkForm {
    csrf: String,
    connector: String,
    subject: String,
}

/// `POST /account/unlink`: unlinks an identity, never the account's last way in.
async fn unlink(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: UnlinkForm = page_form(body)?;
    let (_, user) = session_for_form(&state, &headers, &form.csrf).await?;
    let password_counts = state.connectors().password_login().is_some();
    let outcome = state
        .store()
        .delete_identity(
            &user.id,
            IdentityKey {
                connector_id: &form.connector,
                subject: &form.subject,
            },
            password_counts,
        )
        .await?;
    if outcome == Unlink::Done {
        tracing::info!(user_id = %user.id, connector = %form.connector, "identity unlinked");
    }
    Ok(to_account(
        &state,
        match outcome {
            Unlink::Done => "unlinked",
            Unlink::LastSignInMethod => "last-method",
            Unlink::NotFound => "unlink-missing",
        },
    ))
}

#[derive(Deserialize)]
struct EndSessionForm {
    csrf: String,
    session: String,
}

/// `POST /account/sessions/end`: signs another browser out.
async fn end_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: EndSessionForm = page_form(body)?;
    let (session, user) = session_for_form(&state, &headers, &form.csrf).await?;
    let valid_hash =
        form.session.len() == 64 && form.session.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid_hash || form.session == session.id_hash.as_str() {
        return Err(PageError::bad_request(
            "Invalid request",
            "Choose another browser's session; sign this one out with “Sign out”.",
        ));
    }
    state
        .store()
        .delete_user_session(&user.id, &TokenHash::from_stored(form.session))
        .await?;
    Ok(to_account(&state, "session-ended"))
}

#[derive(Deserialize)]
struct RevokeForm {
    csrf: String,
    client_id: String,
}

/// `POST /account/apps/revoke`: revokes everything an application was given and
/// forgets the consent.
async fn revoke_app(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: RevokeForm = page_form(body)?;
    let (_, user) = session_for_form(&state, &headers, &form.csrf).await?;
    let revoked = state
        .store()
        .revoke_user_client(UserClient {
            user_id: &user.id,
            client_id: &form.client_id,
        })
        .await?;
    tracing::info!(user_id = %user.id, client_id = %form.client_id, grants = revoked, "application access revoked");
    Ok(to_account(&state, "app-revoked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_described() {
        assert_eq!(
            describe_user_agent(Some(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36"
            )),
            "Chromium (headless) on Linux"
        );
        assert_eq!(
            describe_user_agent(Some(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) Gecko/20100101 Firefox/130.0"
            )),
            "Firefox on macOS"
        );
        assert_eq!(describe_user_agent(None), "Unknown browser");
        assert_eq!(describe_user_agent(Some("curl/8.0")), "curl");
    }

    #[test]
    fn only_known_notices_are_shown() {
        assert!(notice_text("linked").is_some());
        assert!(notice_text("<script>").is_none());
    }
}
