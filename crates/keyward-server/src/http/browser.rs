//! The browser side of every page: keyward's cookies (the binding cookie that ties a
//! login in progress to the browser that started it, the session cookie, the
//! known-browser cookie), the session they name, CSRF checks and redirects.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use keyward_proto::TokenHash;

use super::extract::{append_our_cookie, our_cookie};
use super::page_error::PageError;
use crate::domain::{Session, User};
use crate::mac::Purpose;
use crate::state::AppState;

/// Cookie binding a login in progress to the browser that started it.
pub const BROWSER_COOKIE: &str = "keyward_browser";

/// The browser session cookie.
pub const SESSION_COOKIE: &str = "keyward_session";

/// The browser-binding cookie of a request, or a new one to set.
pub(super) struct Browser {
    /// The cookie value.
    pub(super) value: String,
    is_new: bool,
}

impl Browser {
    /// The request's binding cookie, or a fresh value when it has none. The value is
    /// sealed with the server's MAC key: one keyward did not make (planted by another
    /// site or a script, to tie someone's browser to a login the planter knows) is
    /// ignored, and the browser gets a new one.
    pub(super) fn of(state: &AppState, headers: &HeaderMap) -> Self {
        match our_cookie(state, headers, BROWSER_COOKIE) {
            Some(value)
                if value.len() <= 128
                    && state.mac().open(Purpose::BrowserCookie, value).is_some() =>
            {
                Self {
                    value: value.to_owned(),
                    is_new: false,
                }
            }
            _ => Self {
                value: state.mac().seal(
                    Purpose::BrowserCookie,
                    &keyward_proto::secret::random_urlsafe(32),
                ),
                is_new: true,
            },
        }
    }

    /// Whether the request had no binding cookie.
    pub(super) fn is_new(&self) -> bool {
        self.is_new
    }

    /// Adds `Set-Cookie` to `response` when the value is new.
    pub(super) fn set_if_new(&self, state: &AppState, mut response: Response) -> Response {
        if self.is_new {
            append_our_cookie(state, &mut response, BROWSER_COOKIE, &self.value, None);
        }
        response
    }
}

/// The browser's session and user, when the session cookie is valid and the user
/// enabled.
pub async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Session, User)>, PageError> {
    let Some(value) = our_cookie(state, headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let found = state
        .store()
        .get_session_with_user(&TokenHash::of(value), state.now())
        .await?;
    Ok(found.filter(|(_, user)| !user.disabled))
}

pub(super) fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// Cookie naming the account this browser last signed in to with a password: the MAC
/// of its name under the server's key, which nobody else can compute (nor learn the
/// name from). Such a browser is exempt from the account-wide password throttle, so
/// that guessers elsewhere cannot keep the owner out.
pub const KNOWN_BROWSER_COOKIE: &str = "keyward_known";

/// Whether this browser signed in to `username` with a password before.
pub(super) fn known_browser(state: &AppState, headers: &HeaderMap, username: &str) -> bool {
    our_cookie(state, headers, KNOWN_BROWSER_COOKIE).is_some_and(|tag| {
        state.mac().verify(
            Purpose::KnownBrowser,
            username.to_lowercase().as_bytes(),
            tag,
        )
    })
}

/// Sets [`KNOWN_BROWSER_COOKIE`] for `username` (a year).
pub(super) fn remember_browser(state: &AppState, response: &mut Response, username: &str) {
    let tag = state
        .mac()
        .tag(Purpose::KnownBrowser, username.to_lowercase().as_bytes());
    append_our_cookie(
        state,
        response,
        KNOWN_BROWSER_COOKIE,
        &tag,
        Some(365 * 86_400),
    );
}

/// Whether a form's CSRF token is the expected one (compared in constant time).
pub(super) fn csrf_matches(expected: &str, given: &str) -> bool {
    keyward_proto::secret::constant_time_eq(expected.as_bytes(), given.as_bytes())
}
