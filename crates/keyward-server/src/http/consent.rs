//! The consent page (`/consent`): what an application asks to do, approved (and
//! remembered) or denied by the person the login is for, who must still be the one
//! signed in in this browser.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keyward_proto::ErrorCode;
use serde::Deserialize;

use super::browser::current_session;
use super::error::OAuthError;
use super::extract::{Body, parse_form};
use super::login::{RequestRef, Stored, check_csrf, error_page, finish, load_request, reject};
use super::page_error::{PageError, page_form};
use super::routes::Routes;
use crate::domain::{AuthRequest, LoginKind, User};
use crate::state::AppState;
use crate::store::UserClient;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .get("/consent", consent_page)
        .post("/consent", consent_submit)
}

/// What a scope lets an application do, for the consent page.
fn describe_scope(scope: &str) -> String {
    match scope {
        "openid" => "Confirm your identity".into(),
        "profile" => "See your name and username".into(),
        "email" => "See your email address".into(),
        "groups" => "See the groups and teams you belong to".into(),
        "offline_access" => "Stay signed in and act for you while you are away".into(),
        other => format!("Use the {other} permission"),
    }
}

async fn consent_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let Ok(query) = parse_form::<RequestRef>(query.unwrap_or_default().as_bytes()) else {
        return Err(error_page(
            "Invalid request",
            "The consent link is incomplete.",
        ));
    };
    let (request, client) = load_request(&state, &headers, &query.req).await?;
    let user = consenting_user(&state, &headers, &request).await?;
    let scopes: Vec<_> = request
        .scope()
        .iter()
        .map(|s| minijinja::context! { name => s, description => describe_scope(s) })
        .collect();
    Ok(state.pages().render(
        StatusCode::OK,
        "consent.html",
        minijinja::context! {
            client_name => client.name,
            username => user.username,
            scopes => scopes,
            req => request.id,
            csrf => request.csrf,
            device => matches!(request.kind, LoginKind::Device { .. }),
        },
    ))
}

/// The user who is asked to consent: the one the login in progress is for, and still
/// the one signed in in this browser. A consent (or device approval) submitted after
/// the browser signed out, or after someone else signed in there, is refused.
async fn consenting_user(
    state: &AppState,
    headers: &HeaderMap,
    request: &AuthRequest,
) -> Result<User, PageError> {
    let user_id = request
        .user_id
        .as_deref()
        .ok_or_else(|| error_page("Not signed in", "Sign in first."))?;
    match current_session(state, headers).await? {
        Some((_, user)) if user.id == user_id => Ok(user),
        _ => Err(error_page(
            "Signed out",
            "You are no longer signed in as the person this request was for. Go back to the application and start again.",
        )),
    }
}

#[derive(Deserialize)]
struct ConsentForm {
    req: String,
    csrf: String,
    decision: String,
}

async fn consent_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: ConsentForm = page_form(body)?;
    let (request, client) = load_request(&state, &headers, &form.req).await?;
    check_csrf(&request, &form.csrf)?;
    let user = consenting_user(&state, &headers, &request).await?;
    match form.decision.as_str() {
        "approve" => {
            let store = state.store();
            let mut approved = store
                .get_consent(UserClient {
                    user_id: &user.id,
                    client_id: &client.client_id,
                })
                .await?
                .unwrap_or_default();
            approved = approved.union(&request.scope());
            store
                .put_consent(
                    UserClient {
                        user_id: &user.id,
                        client_id: &client.client_id,
                    },
                    &approved,
                    state.now(),
                )
                .await?;
            finish(&state, request, &client, &user, Stored::Yes).await
        }
        "deny" => {
            if !matches!(request.kind, LoginKind::Device { .. }) {
                state.store().take_auth_request(&request.id).await?;
            }
            reject(
                &state,
                &request,
                ErrorCode::AccessDenied,
                "the user denied the request",
            )
            .await
        }
        _ => Err(error_page("Invalid request", "Unknown decision.")),
    }
}
