//! The one-time set-password link an administrator hands to a person
//! (`/password/set?token=…`, made by the admin API or console): a page to choose a new
//! password, twice. The link is the only credential: it is 256 random bits, kept only
//! as a hash, works for a day, once. Using it sets the password, ends the account's
//! sessions, revokes its grants and writes the audit log (`user.password-set`, by the
//! person) in one transaction, so that two tabs cannot both use it; the token is
//! checked before the password is hashed, so a guessed link costs one lookup.
//! The page sends no referrer and the access log never holds a query, so the token
//! stays in the address bar it came in.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use keyward_proto::{Password, TokenHash};
use serde::Deserialize;

use super::error::OAuthError;
use super::extract::{Body, ClientAddr, parse_form};
use super::page_error::{PageError, page_form};
use super::routes::Routes;
use crate::admin::check_password_strength;
use crate::domain::{AuditEntry, User};
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .get("/password/set", page)
        .post("/password/set", submit)
}

#[derive(Deserialize)]
struct LinkQuery {
    token: String,
}

/// The token as stored: its hash; `None` when it cannot be one keyward made.
fn token_hash(token: &str) -> Option<TokenHash> {
    (token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| TokenHash::of(token))
}

fn dead_link() -> PageError {
    PageError::new(
        StatusCode::GONE,
        "Link expired",
        "This link was already used, replaced by a newer one, or has expired. Ask your administrator for a new one.",
    )
}

/// The account a link is for, if it still works.
async fn link_user(state: &AppState, token: &str) -> Result<User, PageError> {
    let hash = token_hash(token).ok_or_else(dead_link)?;
    state
        .store()
        .password_link_user(&hash, state.now())
        .await?
        .filter(|user| !user.disabled)
        .ok_or_else(dead_link)
}

fn form_page(
    state: &AppState,
    status: StatusCode,
    user: &User,
    token: &str,
    error: Option<&str>,
) -> Response {
    state.pages().render(
        status,
        "password_set.html",
        minijinja::context! {
            username => user.username,
            token => token,
            error => error,
            done => false,
        },
    )
}

/// `GET /password/set?token=…`: the form.
async fn page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let query: LinkQuery = parse_form(query.unwrap_or_default().as_bytes()).map_err(|_| {
        PageError::bad_request("Invalid link", "The link is incomplete: copy all of it.")
    })?;
    let user = link_user(&state, &query.token).await?;
    Ok(form_page(&state, StatusCode::OK, &user, &query.token, None))
}

#[derive(Deserialize)]
struct SetForm {
    token: String,
    password: Password,
    repeat: Password,
}

/// `POST /password/set`: sets the password if the link still works.
async fn submit(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: SetForm = page_form(body)?;
    let user = link_user(&state, &form.token).await?;
    let refuse = |why: &str| {
        Ok(form_page(
            &state,
            StatusCode::BAD_REQUEST,
            &user,
            &form.token,
            Some(why),
        ))
    };
    if form.password != form.repeat {
        return refuse("The two passwords differ.");
    }
    if let Err(why) = check_password_strength(&form.password) {
        return refuse(&format!("{why}."));
    }
    let hash = crate::password::hash(form.password).await?;
    let hash_of_token = token_hash(&form.token).ok_or_else(dead_link)?;
    let Some(user_id) = state
        .store()
        .use_password_link(
            &hash_of_token,
            &hash,
            state.now(),
            &AuditEntry::new(
                format!("user:{}", user.username),
                "user.password-set",
                &user.username,
                addr.map(|a| a.to_string()),
                state.now(),
            ),
        )
        .await?
    else {
        return Err(dead_link());
    };
    tracing::info!(user_id = %user_id, "password set through a set-password link");
    Ok(state.pages().render(
        StatusCode::OK,
        "password_set.html",
        minijinja::context! { username => user.username, done => true },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_keyward_makes_is_looked_up() {
        let made = keyward_proto::OpaqueToken::generate();
        assert!(token_hash(made.secret()).is_some());
        assert!(token_hash("").is_none());
        assert!(token_hash(&"a".repeat(44)).is_none());
        assert!(token_hash(&format!("{}%", &made.secret()[1..])).is_none());
    }
}
