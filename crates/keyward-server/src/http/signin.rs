//! The login page (`GET /login`: a button for each upstream provider, a form for each
//! emailed-link connector, the password form) and the password sign-in (`POST /login`),
//! throttled before the password is checked ([`crate::throttle`]).

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::browser::{known_browser, remember_browser};
use super::error::{OAuthError, wait_text, with_retry_after};
use super::extract::{Body, ClientAddr, parse_form};
use super::login::{
    LoginNotice, RequestRef, check_csrf, error_page, load_request, render_login, sign_in,
};
use super::page_error::{PageError, page_form};
use super::routes::Routes;
use crate::state::AppState;
use crate::throttle;

/// The user `username` names, if `password` is theirs. The password is checked (or a
/// dummy hash is, when there is no such user) either way, so that the time taken does
/// not tell whether a username exists.
async fn user_with_password(
    store: &dyn crate::store::Store,
    username: &str,
    password: keyward_proto::Password,
) -> Result<Option<crate::domain::User>, PageError> {
    let user = if username.is_empty() || username.len() > 256 {
        None
    } else {
        store.get_user_by_username(username).await?
    };
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let password_ok = crate::password::verify(password, stored).await?;
    Ok(user.filter(|_| password_ok))
}

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .get("/login", login_page)
        .post("/login", login_submit)
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let Ok(query) = parse_form::<RequestRef>(query.unwrap_or_default().as_bytes()) else {
        return Err(error_page(
            "Invalid request",
            "The sign-in link is incomplete.",
        ));
    };
    let (request, client) = load_request(&state, &headers, &query.req).await?;
    Ok(render_login(
        &state,
        &request,
        &client,
        LoginNotice {
            username: request.login_hint.as_deref().unwrap_or(""),
            ..LoginNotice::default()
        },
    ))
}

#[derive(Deserialize)]
struct LoginForm {
    req: String,
    csrf: String,
    username: String,
    password: keyward_proto::Password,
}

async fn login_submit(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: LoginForm = page_form(body)?;
    let (request, client) = load_request(&state, &headers, &form.req).await?;
    check_csrf(&request, &form.csrf)?;
    let connectors = state.connectors();
    let Some(password_login) = connectors.password_login() else {
        return Err(error_page(
            "Password sign-in is off",
            "This server does not accept passwords. Go back and choose another way to sign in.",
        ));
    };
    let username = form.username.trim();
    let store = state.store();
    let client_addr = addr.map(|a| a.to_string()).unwrap_or_default();
    let notice = |error, status| LoginNotice {
        username,
        error: Some(error),
        status: Some(status),
        ..LoginNotice::default()
    };
    // Counted before the password is checked, so parallel guesses are counted too.
    let known = known_browser(&state, &headers, username);
    let attempt = match throttle::password_attempt(store, username, addr, known, state.now())
        .await?
    {
        Ok(attempt) => attempt,
        Err(retry_after) => {
            state
                .metrics()
                .increment("keyward_login_failures_total", &[("reason", "throttled")]);
            tracing::warn!(username = ?username, client = %client_addr, retry_after, "password sign-in throttled");
            let message = format!(
                "Too many failed sign-in attempts. Try again in {}.",
                wait_text(retry_after)
            );
            let page = render_login(
                &state,
                &request,
                &client,
                notice(&message, StatusCode::TOO_MANY_REQUESTS),
            );
            return Ok(with_retry_after(page, retry_after));
        }
    };
    let user = match user_with_password(store, username, form.password).await? {
        Some(user) => user,
        None => {
            attempt.failed();
            state.metrics().increment(
                "keyward_login_failures_total",
                &[("reason", "bad_credentials")],
            );
            tracing::warn!(username = ?username, client = %client_addr, client_id = %client.client_id, "failed password sign-in");
            return Ok(render_login(
                &state,
                &request,
                &client,
                notice("Invalid username or password.", StatusCode::UNAUTHORIZED),
            ));
        }
    };
    attempt.succeeded(store).await?;
    if user.disabled {
        state
            .metrics()
            .increment("keyward_login_failures_total", &[("reason", "disabled")]);
        tracing::warn!(user_id = %user.id, client = %client_addr, "sign-in to a disabled account");
        return Ok(render_login(
            &state,
            &request,
            &client,
            notice("This account is disabled.", StatusCode::FORBIDDEN),
        ));
    }
    tracing::info!(user_id = %user.id, client = %client_addr, client_id = %client.client_id, "password sign-in");
    state
        .metrics()
        .increment("keyward_password_logins_total", &[]);
    let method = password_login.id.clone();
    let mut response = sign_in(&state, &headers, addr, request, &client, &user, &method).await?;
    remember_browser(&state, &mut response, username);
    Ok(response)
}
