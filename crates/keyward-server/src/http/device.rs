//! Device authorization (RFC 8628): the device authorization endpoint a device or
//! terminal calls, and the `/device` page where its user types the user code.
//!
//! After the code is entered the login continues exactly as the code flow does (login
//! page, single sign-on, consent, always shown for a device so that nobody approves a
//! stranger's code unawares); the last step approves the device code instead of
//! redirecting, and the device collects its tokens by polling `/token`. Typed codes are
//! counted per client address before they are looked up, and throttled with back-off
//! ([`crate::throttle::USER_CODE_PER_ADDRESS`]).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_proto::device::{DeviceAuthorizationResponse, UserCode};
use keyward_proto::token::{ClientCredentialsInBody, DEVICE_CODE_GRANT};
use keyward_proto::{ErrorCode, OpaqueToken, ScopeSet, TokenHash};
use serde::Deserialize;

use super::browser::{Browser, csrf_matches};
use super::client_auth::{ClientAuth, authenticate};
use super::error::{ApiError, OAuthError, no_store, wait_text, with_retry_after};
use super::extract::{Body, ClientAddr, parse_form};
use super::login::{error_page, start_login};
use super::page_error::{PageError, page_form};
use super::routes::Routes;
use crate::grants;
use crate::state::AppState;
use crate::throttle;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .post("/device/code", device_authorization)
        .get("/device", entry_page)
        .post("/device", entry_submit)
}

#[derive(Deserialize)]
struct DeviceAuthorizationForm {
    scope: Option<ScopeSet>,
}

/// RFC 8628 §3.1–3.2.
async fn device_authorization(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, ApiError> {
    let Body(body) = body?;
    let credentials: ClientCredentialsInBody = parse_form(&body)?;
    let form: DeviceAuthorizationForm = parse_form(&body)?;
    let (client, auth) = authenticate(&state, &headers, credentials).await?;
    // Anyone may start a device login for a public client: limit how many per address.
    if auth != ClientAuth::Secret
        && let Err(retry_after) = state.creations().allow(addr)
    {
        return Err(ApiError::too_many(retry_after));
    }
    if !client.allows_grant(DEVICE_CODE_GRANT) {
        let message = "this client may not use the device authorization grant";
        return Err(OAuthError::new(ErrorCode::UnauthorizedClient, message).into());
    }
    let scope = grants::device::requested_scope(&client, form.scope)?;
    let device_code = OpaqueToken::generate();
    let user_code = grants::device::start(
        &state.issuer(),
        &client.client_id,
        scope,
        &device_code,
        None,
    )
    .await?;
    let config = state.config();
    let verification_uri = config.endpoint("/device");
    let response = DeviceAuthorizationResponse {
        device_code: device_code.secret().to_owned(),
        verification_uri_complete: Some(format!(
            "{verification_uri}?user_code={}",
            user_code.display()
        )),
        user_code: user_code.display(),
        verification_uri,
        expires_in: config.device_code_ttl.as_secs(),
        interval: config.device_poll_interval.as_secs(),
    };
    Ok((no_store(), Json(response)).into_response())
}

/// The CSRF token of the code-entry form: derived from the browser-binding cookie, which
/// another site cannot read.
fn entry_csrf(browser: &Browser) -> String {
    TokenHash::of(&format!("device-entry:{}", browser.value))
        .as_str()
        .to_owned()
}

#[derive(Deserialize)]
struct EntryQuery {
    user_code: Option<String>,
}

async fn entry_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EntryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let browser = Browser::of(&state, &headers);
    let prefill = query
        .ok()
        .and_then(|Query(q)| q.user_code)
        .unwrap_or_default();
    let prefill = UserCode::parse(&prefill)
        .map(|c| c.display())
        .unwrap_or_default();
    let page = render_entry(&state, &browser, &prefill, None, StatusCode::OK);
    browser.set_if_new(&state, page)
}

fn render_entry(
    state: &AppState,
    browser: &Browser,
    user_code: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    state.pages().render(
        status,
        "device.html",
        minijinja::context! { csrf => entry_csrf(browser), user_code => user_code, error => error },
    )
}

#[derive(Deserialize)]
struct EntryForm {
    csrf: String,
    user_code: String,
}

async fn entry_submit(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let browser = Browser::of(&state, &headers);
    let form: EntryForm = page_form(body)?;
    let expected = entry_csrf(&browser);
    // A form posted without the binding cookie cannot carry a valid CSRF token.
    if browser.is_new() || !csrf_matches(&expected, &form.csrf) {
        return Err(error_page(
            "Form expired",
            "The form was stale or forged. Open the link from your device again.",
        ));
    }
    let store = state.store();
    let at = state.now();
    let client_addr = addr.map(|a| a.to_string()).unwrap_or_default();
    // Counted before the code is looked up, so parallel guesses are counted too.
    let attempt = match throttle::user_code_attempt(store, addr, at).await? {
        Ok(attempt) => attempt,
        Err(retry_after) => {
            state.metrics().increment(
                "keyward_login_failures_total",
                &[("reason", "user_code_throttled")],
            );
            tracing::warn!(client = %client_addr, retry_after, "user code entry throttled");
            let message = format!(
                "Too many wrong codes. Try again in {}.",
                wait_text(retry_after)
            );
            let page = render_entry(
                &state,
                &browser,
                "",
                Some(&message),
                StatusCode::TOO_MANY_REQUESTS,
            );
            return Ok(with_retry_after(page, retry_after));
        }
    };
    let found = match UserCode::parse(&form.user_code) {
        Some(code) => store
            .find_pending_device_code(code.as_str(), at)
            .await?
            .filter(|device| !device.needs_challenge()),
        None => None,
    };
    let Some(device) = found else {
        state.metrics().increment(
            "keyward_login_failures_total",
            &[("reason", "bad_user_code")],
        );
        tracing::warn!(client = %client_addr, "wrong user code");
        let message = "That code is not valid or has expired. Check your device and try again.";
        return Ok(render_entry(
            &state,
            &browser,
            "",
            Some(message),
            StatusCode::BAD_REQUEST,
        ));
    };
    attempt.succeeded(store).await?;
    start_login(&state, addr, &headers, &browser, device).await
}
