//! A stand-in for GitHub, which the tests cannot reach: the OAuth web flow and the REST
//! endpoints keyward reads, answering as GitHub documents them ("Authorizing OAuth
//! apps", "REST API endpoints for users / emails / organizations / teams"):
//!
//! - `GET /login/oauth/authorize` redirects back with `code` and `state` once "the
//!   person" (whoever [`FakeGithub::sign_in_as`] named) approves, with
//!   `error=access_denied` when nobody is signed in, and to the registered callback
//!   with `error=redirect_uri_mismatch` for another redirect URI;
//! - `POST /login/oauth/access_token` answers 200 in every case: JSON with `Accept:
//!   application/json` (form-encoded otherwise), `{"error": "bad_verification_code"}`
//!   for a wrong, used or expired code or a PKCE verifier that does not match,
//!   `incorrect_client_credentials` for a wrong secret (each with `error_uri`, as
//!   GitHub sends it); the `scope` it answers with is what the
//!   person granted, comma-separated, which may be less than was asked for
//!   ([`FakeGithub::grant_scopes`]: "users can edit the scopes you requested");
//! - under the API prefix (`/api/v3`, as on GitHub Enterprise): `GET /user`,
//!   `/user/emails` (404 without `user:email`), `/user/orgs` (only public memberships
//!   without `read:org`: the fake has none), `/user/teams` (403 without `read:org`),
//!   paged with `per_page`, `page` and a `Link` header; 401 `Bad credentials` without
//!   a valid token;
//! - `POST <api>/applications/{client_id}/token` ("Check a token", OAuth apps), with the
//!   app's credentials in Basic auth and `{"access_token": …}`: 200 with the token's
//!   `scopes` and `user` for a token of this app, 404 `Not Found` for any other (another
//!   app's, revoked, made up) or for wrong credentials; tokens are minted without the
//!   web flow by [`FakeGithub::issue_token`] and, for another app,
//!   [`FakeGithub::issue_token_for_another_app`];
//! - what goes wrong, on demand ([`Trouble`]): a code that expired before it was
//!   redeemed, a token revoked as soon as it was issued, a used-up rate limit (403 or
//!   429 with `x-ratelimit-remaining: 0`, as "Rate limits for the REST API" says).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use sha2::Digest as _;

/// A GitHub account known to the fake.
#[derive(Clone)]
pub struct FakeUser {
    pub id: u64,
    pub login: String,
    pub name: Option<String>,
    /// (address, primary, verified)
    pub emails: Vec<(String, bool, bool)>,
    pub orgs: Vec<String>,
    /// (organisation, team slug)
    pub teams: Vec<(String, String)>,
}

/// What goes wrong at the fake, as GitHub documents it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trouble {
    /// Codes expire (after ten minutes at GitHub) before they are redeemed: the token
    /// endpoint answers 200 with `error=bad_verification_code`.
    ExpiredCode,
    /// The person revokes the authorisation as soon as it was granted: the token the
    /// fake issues is refused everywhere with 401 `Bad credentials`.
    RevokedToken,
    /// The API's primary rate limit is used up: every API request is answered with
    /// this status (GitHub uses 403 or 429) and `x-ratelimit-remaining: 0`.
    RateLimited(StatusCode),
}

struct Issued {
    login: String,
    redirect_uri: Option<String>,
    challenge: Option<String>,
    scope: String,
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, FakeUser>,
    signed_in: Option<String>,
    codes: HashMap<String, Issued>,
    tokens: HashMap<String, (String, String)>,
    authorize_requests: Vec<HashMap<String, String>>,
    token_requests: Vec<HashMap<String, String>>,
    /// The OAuth app's registered callback URL.
    callback: String,
    trouble: Option<Trouble>,
    /// Every token issued, revoked or not.
    issued: Vec<String>,
    /// The scopes the person grants, comma-separated; `None`: all that were asked.
    granted: Option<String>,
    /// Tokens issued to another OAuth app (they work at the API, but are not this
    /// app's).
    other_apps: std::collections::HashSet<String>,
    /// How many "check a token" requests were received.
    token_checks: usize,
}

#[derive(Clone)]
struct Fake {
    client_id: String,
    client_secret: String,
    inner: Arc<Mutex<Inner>>,
}

/// A running fake GitHub.
pub struct FakeGithub {
    /// Its base URL (`base_url` in keyward's configuration).
    pub url: String,
    fake: Fake,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl FakeGithub {
    /// Starts the fake on 127.0.0.1 port 0, with one OAuth app.
    pub async fn start(client_id: &str, client_secret: &str, callback: &str) -> Self {
        let fake = Fake {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            inner: Arc::default(),
        };
        fake.inner.lock().unwrap().callback = callback.into();
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(access_token))
            .route("/api/v3/user", get(user))
            .route("/api/v3/user/emails", get(emails))
            .route("/api/v3/user/orgs", get(orgs))
            .route("/api/v3/user/teams", get(teams))
            .route("/api/v3/applications/{client_id}/token", post(check_token))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            url,
            fake,
            _shutdown: tx,
        }
    }

    /// The API base URL (`api_url` in keyward's configuration).
    pub fn api_url(&self) -> String {
        format!("{}/api/v3", self.url)
    }

    /// Adds an account.
    pub fn add_user(&self, user: FakeUser) {
        let mut inner = self.fake.inner.lock().unwrap();
        inner.users.insert(user.login.clone(), user);
    }

    /// Who approves the next authorization requests (`None`: they are denied).
    pub fn sign_in_as(&self, login: Option<&str>) {
        self.fake.inner.lock().unwrap().signed_in = login.map(str::to_owned);
    }

    /// Registers another callback URL for the OAuth app (a keyward that moved).
    pub fn register_callback(&self, callback: &str) {
        self.fake.inner.lock().unwrap().callback = callback.into();
    }

    /// What goes wrong from now on (`None`: nothing).
    pub fn trouble(&self, trouble: Option<Trouble>) {
        self.fake.inner.lock().unwrap().trouble = trouble;
    }

    /// The scopes the person grants from now on (`None`: all that are asked for).
    pub fn grant_scopes(&self, scopes: Option<&[&str]>) {
        self.fake.inner.lock().unwrap().granted = scopes.map(|s| s.join(","));
    }

    /// A token of this OAuth app for `login` with `scopes`, as if the person had
    /// authorised the app through the web flow.
    pub fn issue_token(&self, login: &str, scopes: &[&str]) -> String {
        let token = format!("gho_{}", keyward_proto::secret::random_urlsafe(18));
        let mut inner = self.fake.inner.lock().unwrap();
        inner.issued.push(token.clone());
        inner
            .tokens
            .insert(token.clone(), (login.to_owned(), scopes.join(",")));
        token
    }

    /// A token of another OAuth app for `login`: the API answers it, but it is not
    /// this app's.
    pub fn issue_token_for_another_app(&self, login: &str, scopes: &[&str]) -> String {
        let token = self.issue_token(login, scopes);
        self.fake
            .inner
            .lock()
            .unwrap()
            .other_apps
            .insert(token.clone());
        token
    }

    /// How many "check a token" requests were received.
    pub fn token_checks(&self) -> usize {
        self.fake.inner.lock().unwrap().token_checks
    }

    /// Every access token issued.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.fake.inner.lock().unwrap().issued.clone()
    }

    /// The form of every access token request received.
    pub fn token_requests(&self) -> Vec<HashMap<String, String>> {
        self.fake.inner.lock().unwrap().token_requests.clone()
    }

    /// The parameters of every authorization request received.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        self.fake.inner.lock().unwrap().authorize_requests.clone()
    }
}

fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(base).unwrap();
    url.query_pairs_mut().extend_pairs(pairs);
    url.to_string()
}

async fn authorize(
    State(fake): State<Fake>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let mut inner = fake.inner.lock().unwrap();
    inner.authorize_requests.push(params.clone());
    if params.get("client_id") != Some(&fake.client_id) {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    let state = params.get("state").cloned().unwrap_or_default();
    if let Some(uri) = params.get("redirect_uri")
        && *uri != inner.callback
    {
        return Redirect::to(&with_query(
            &inner.callback,
            &[
                ("error", "redirect_uri_mismatch"),
                (
                    "error_description",
                    "The redirect_uri MUST match the registered callback URL for this application.",
                ),
                (
                    "error_uri",
                    "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#redirect-uri-mismatch",
                ),
                ("state", &state),
            ],
        ))
        .into_response();
    }
    let callback = params
        .get("redirect_uri")
        .cloned()
        .unwrap_or(inner.callback.clone());
    let Some(login) = inner.signed_in.clone() else {
        return Redirect::to(&with_query(
            &callback,
            &[
                ("error", "access_denied"),
                (
                    "error_description",
                    "The user has denied your application access.",
                ),
                (
                    "error_uri",
                    "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied",
                ),
                ("state", &state),
            ],
        ))
        .into_response();
    };
    let code = keyward_proto::secret::random_urlsafe(10);
    let scope = inner.granted.clone().unwrap_or_else(|| {
        params
            .get("scope")
            .cloned()
            .unwrap_or_default()
            .replace(' ', ",")
    });
    inner.codes.insert(
        code.clone(),
        Issued {
            login,
            redirect_uri: params.get("redirect_uri").cloned(),
            challenge: params.get("code_challenge").cloned(),
            scope,
        },
    );
    Redirect::to(&with_query(
        &callback,
        &[("code", &code), ("state", &state)],
    ))
    .into_response()
}

async fn access_token(
    State(fake): State<Fake>,
    headers: HeaderMap,
    body: axum::extract::Form<HashMap<String, String>>,
) -> Response {
    let form = body.0;
    fake.inner.lock().unwrap().token_requests.push(form.clone());
    let json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let answer = |pairs: Vec<(&str, String)>| -> Response {
        if json {
            let map: serde_json::Map<_, _> = pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
                .collect();
            axum::Json(serde_json::Value::Object(map)).into_response()
        } else {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            (
                [(header::CONTENT_TYPE, "application/x-www-form-urlencoded")],
                body,
            )
                .into_response()
        }
    };
    if form.get("client_id") != Some(&fake.client_id)
        || form.get("client_secret") != Some(&fake.client_secret)
    {
        return answer(vec![
            ("error", "incorrect_client_credentials".into()),
            (
                "error_description",
                "The client_id and/or client_secret passed are incorrect.".into(),
            ),
            (
                "error_uri",
                "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#incorrect-client-credentials".into(),
            ),
        ]);
    }
    let bad_code = || {
        answer(vec![
            ("error", "bad_verification_code".into()),
            (
                "error_description",
                "The code passed is incorrect or expired.".into(),
            ),
            (
                "error_uri",
                "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code".into(),
            ),
        ])
    };
    let mut inner = fake.inner.lock().unwrap();
    let Some(issued) = form.get("code").and_then(|c| inner.codes.remove(c)) else {
        return bad_code();
    };
    if inner.trouble == Some(Trouble::ExpiredCode) {
        return bad_code();
    }
    if issued.redirect_uri.is_some() && form.get("redirect_uri") != issued.redirect_uri.as_ref() {
        return bad_code();
    }
    if let Some(challenge) = &issued.challenge {
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        if &computed != challenge {
            return bad_code();
        }
    }
    let token = format!("gho_{}", keyward_proto::secret::random_urlsafe(18));
    inner.issued.push(token.clone());
    if inner.trouble != Some(Trouble::RevokedToken) {
        inner
            .tokens
            .insert(token.clone(), (issued.login, issued.scope.clone()));
    }
    answer(vec![
        ("access_token", token),
        ("scope", issued.scope),
        ("token_type", "bearer".into()),
    ])
}

/// The account and scopes behind the request's token, or GitHub's 401.
#[allow(clippy::result_large_err)]
fn caller(fake: &Fake, headers: &HeaderMap) -> Result<(FakeUser, String), Response> {
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "message": "Bad credentials",
                "documentation_url": "https://docs.github.com/rest",
                "status": "401"
            })),
        )
            .into_response()
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .ok_or_else(unauthorized)?;
    let inner = fake.inner.lock().unwrap();
    let (login, scope) = inner.tokens.get(token).cloned().ok_or_else(unauthorized)?;
    let user = inner.users.get(&login).cloned().ok_or_else(unauthorized)?;
    if let Some(Trouble::RateLimited(status)) = inner.trouble {
        return Err(rate_limited(status, &user));
    }
    Ok((user, scope))
}

/// GitHub's answer once the primary rate limit is used up ("Rate limits for the REST
/// API": 403 or 429, `x-ratelimit-remaining: 0`, the reset time in epoch seconds).
fn rate_limited(status: StatusCode, user: &FakeUser) -> Response {
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1800;
    (
        status,
        [
            ("x-ratelimit-limit", "5000".to_owned()),
            ("x-ratelimit-remaining", "0".to_owned()),
            ("x-ratelimit-used", "5000".to_owned()),
            ("x-ratelimit-reset", reset.to_string()),
            ("x-ratelimit-resource", "core".to_owned()),
        ],
        axum::Json(serde_json::json!({
            "message": format!("API rate limit exceeded for user ID {}. If you reach out to GitHub Support for help, please include the request ID 0000:0000:0000000:0000000:00000000.", user.id),
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            "status": status.as_str()
        })),
    )
        .into_response()
}

async fn user(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    match caller(&fake, &headers) {
        Ok((user, _)) => {
            let public_email = user
                .emails
                .iter()
                .find(|(_, primary, verified)| *primary && *verified)
                .map(|(e, _, _)| e.clone());
            axum::Json(serde_json::json!({
                "login": user.login,
                "id": user.id,
                "node_id": format!("U_{}", user.id),
                "avatar_url": format!("https://avatars.githubusercontent.com/u/{}?v=4", user.id),
                "type": "User",
                "site_admin": false,
                "name": user.name,
                "company": null,
                "blog": "",
                "location": null,
                "email": public_email,
                "bio": null,
                "public_repos": 2,
                "followers": 20,
                "following": 0,
                "created_at": "2008-01-14T04:33:35Z",
                "updated_at": "2008-01-14T04:33:35Z"
            }))
            .into_response()
        }
        Err(response) => response,
    }
}

async fn emails(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    match caller(&fake, &headers) {
        Ok((user, scope)) if scope.split(',').any(|s| s == "user:email" || s == "user") => {
            let list: Vec<_> = user
                .emails
                .iter()
                .map(|(email, primary, verified)| {
                    serde_json::json!({
                        "email": email,
                        "verified": verified,
                        "primary": primary,
                        "visibility": if *primary { serde_json::json!("public") } else { serde_json::Value::Null }
                    })
                })
                .collect();
            axum::Json(list).into_response()
        }
        Ok(_) => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "message": "Not Found",
                "documentation_url": "https://docs.github.com/rest/users/emails#list-email-addresses-for-the-authenticated-user",
                "status": "404"
            })),
        )
            .into_response(),
        Err(response) => response,
    }
}

/// One page of `items`, with GitHub's `Link` header when there is more.
fn paged(items: Vec<serde_json::Value>, params: &HashMap<String, String>, url: &str) -> Response {
    let per_page: usize = params
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page: usize = params
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let pages = items.len().div_ceil(per_page).max(1);
    let slice: Vec<_> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut response = axum::Json(slice).into_response();
    if page < pages {
        let link = format!(
            "<{url}?per_page={per_page}&page={}>; rel=\"next\", <{url}?per_page={per_page}&page={pages}>; rel=\"last\"",
            page + 1
        );
        response
            .headers_mut()
            .insert(header::LINK, link.parse().unwrap());
    }
    response
}

async fn orgs(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match caller(&fake, &headers) {
        Ok((user, scope)) => {
            // Without read:org, only public memberships are listed; the fake has none.
            let reads = scope
                .split(',')
                .any(|s| s == "read:org" || s == "admin:org");
            let items = if reads {
                user.orgs
                    .iter()
                    .enumerate()
                    .map(|(i, login)| serde_json::json!({"login": login, "id": 1000 + i, "description": null}))
                    .collect()
            } else {
                Vec::new()
            };
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            paged(items, &params, &format!("http://{host}/api/v3/user/orgs"))
        }
        Err(response) => response,
    }
}

async fn teams(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match caller(&fake, &headers) {
        Ok((user, scope)) if scope.split(',').any(|s| s == "read:org" || s == "admin:org") => {
            let items = user
                .teams
                .iter()
                .enumerate()
                .map(|(i, (org, slug))| {
                    serde_json::json!({
                        "id": 2000 + i,
                        "name": slug,
                        "slug": slug,
                        "privacy": "closed",
                        "organization": {"login": org, "id": 1000}
                    })
                })
                .collect();
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            paged(items, &params, &format!("http://{host}/api/v3/user/teams"))
        }
        Ok(_) => (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({
                "message": "You need at least read:org scope or user scope to list your teams.",
                "documentation_url": "https://docs.github.com/rest/teams/teams#list-teams-for-the-authenticated-user",
                "status": "403"
            })),
        )
            .into_response(),
        Err(response) => response,
    }
}

/// "Check a token" (`POST /applications/{client_id}/token`): the token's scopes and
/// user when it is one of this app's and the app's credentials are right; 404
/// otherwise, as GitHub answers.
async fn check_token(
    State(fake): State<Fake>,
    axum::extract::Path(client_id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: axum::Json<serde_json::Value>,
) -> Response {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "message": "Not Found",
                "documentation_url": "https://docs.github.com/rest/apps/oauth-applications#check-a-token",
                "status": "404"
            })),
        )
            .into_response()
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", fake.client_id, fake.client_secret))
    );
    let mut inner = fake.inner.lock().unwrap();
    inner.token_checks += 1;
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized || client_id != fake.client_id {
        return not_found();
    }
    let Some(token) = body.0["access_token"].as_str() else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(serde_json::json!({"message": "Validation Failed", "status": "422"})),
        )
            .into_response();
    };
    if inner.other_apps.contains(token) {
        return not_found();
    }
    let Some((login, scope)) = inner.tokens.get(token).cloned() else {
        return not_found();
    };
    let Some(user) = inner.users.get(&login).cloned() else {
        return not_found();
    };
    let scopes: Vec<&str> = scope.split(',').filter(|s| !s.is_empty()).collect();
    axum::Json(serde_json::json!({
        "id": 1,
        "url": format!("https://api.github.com/authorizations/1"),
        "scopes": scopes,
        "token": token,
        "token_last_eight": &token[token.len().saturating_sub(8)..],
        "app": {"client_id": fake.client_id, "name": "keyward", "url": "http://127.0.0.1"},
        "user": {"login": user.login, "id": user.id, "type": "User"},
        "created_at": "2011-09-06T17:26:27Z",
        "updated_at": "2011-09-06T20:39:23Z"
    }))
    .into_response()
}
