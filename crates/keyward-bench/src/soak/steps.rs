//! What each [`Step`] sends and what answer it expects: the requests of the soak's
//! clients, every answer checked (status, and the OAuth error code of a refusal).

use std::time::Instant;

use anyhow::{Context as _, bail};
use hyper::StatusCode;
use hyper::header;
use keyward_proto::secret::random_urlsafe;
use rand::Rng as _;

use super::{Chain, Client, DEVICE_POLL, SCOPE, Shared, Step};
use crate::load::Reply;
use crate::target::{Browser, Site, enc};

/// Sends `step`'s requests for `client`; an error describes the first answer that was
/// not the one expected (status and error code, never a token).
pub(super) async fn perform(
    shared: &Shared,
    client: &mut Client,
    step: Step,
) -> anyhow::Result<()> {
    match step {
        Step::SignIn => sign_in(shared, client).await,
        Step::SignOut => sign_out(shared, client).await,
        Step::CodeFlow => {
            let tokens = code_flow(shared, client).await?;
            client.take_grant(&tokens)
        }
        Step::Refresh => refresh(shared, client).await,
        Step::ClientCredentials => {
            let reply = token_request(
                shared,
                client,
                "grant_type=client_credentials&scope=api%3Aread",
            )
            .await?;
            expect(&reply, StatusCode::OK, None)?;
            access_token(&reply.json()?).map(|_| ())
        }
        Step::Introspect => {
            let token = client.access_token()?;
            let active = introspect(shared, client, &token).await?;
            if !active {
                bail!("a live access token was reported inactive");
            }
            Ok(())
        }
        Step::Userinfo => {
            let bearer = format!("Bearer {}", client.access_token()?);
            let reply = client
                .conn
                .get(
                    &shared.paths.userinfo,
                    &[(header::AUTHORIZATION, bearer.as_str())],
                )
                .await?;
            expect(&reply, StatusCode::OK, None)?;
            if reply.json()?["sub"].as_str().is_none() {
                bail!("userinfo without sub");
            }
            Ok(())
        }
        Step::Revoke => revoke(shared, client).await,
        Step::Device => device(shared, client).await,
        Step::AbandonLogin => abandon_login(shared, client).await,
        Step::WrongSecret => {
            let basic = format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{}:{}", crate::target::CLIENT_ID, random_urlsafe(32))
                )
            );
            shared.failing_request();
            let reply = client
                .conn
                .post(
                    &shared.site.endpoints.token,
                    &[(header::AUTHORIZATION, basic.as_str())],
                    "grant_type=client_credentials".into(),
                )
                .await?;
            expect(&reply, StatusCode::UNAUTHORIZED, Some("invalid_client"))
        }
        Step::GarbageIntrospect => {
            shared.failing_request();
            if introspect(shared, client, &random_urlsafe(32)).await? {
                bail!("a made-up token was reported active");
            }
            Ok(())
        }
        Step::GarbageUserinfo => {
            let bearer = format!("Bearer {}", random_urlsafe(32));
            shared.failing_request();
            let reply = client
                .conn
                .get(
                    &shared.paths.userinfo,
                    &[(header::AUTHORIZATION, bearer.as_str())],
                )
                .await?;
            expect(&reply, StatusCode::UNAUTHORIZED, None)
        }
        Step::ReplayedCode => {
            let (code, verifier) = authorize(shared, client).await?;
            let form = Site::code_form(&code, &verifier);
            let reply = token_request(shared, client, &form).await?;
            expect(&reply, StatusCode::OK, None)?;
            shared.failing_request();
            let reply = token_request(shared, client, &form).await?;
            expect(&reply, StatusCode::BAD_REQUEST, Some("invalid_grant"))
        }
        Step::WrongVerifier => {
            let (code, _) = authorize(shared, client).await?;
            let (other, _) = crate::target::pkce();
            shared.failing_request();
            let reply = token_request(shared, client, &Site::code_form(&code, &other)).await?;
            expect(&reply, StatusCode::BAD_REQUEST, Some("invalid_grant"))
        }
        Step::UnsupportedGrant => {
            let form = format!(
                "grant_type=password&username={}&password={}",
                crate::target::USERNAME,
                random_urlsafe(12)
            );
            shared.failing_request();
            let reply = token_request(shared, client, &form).await?;
            expect(
                &reply,
                StatusCode::BAD_REQUEST,
                Some("unsupported_grant_type"),
            )
        }
    }
}

impl Client {
    /// Keeps the grant and access token of a token response.
    fn take_grant(&mut self, tokens: &serde_json::Value) -> anyhow::Result<()> {
        let refresh_token = tokens["refresh_token"]
            .as_str()
            .context("no refresh token issued")?
            .to_owned();
        let access = access_token(tokens)?;
        let now = Instant::now();
        self.chain = Some(Chain {
            refresh_token,
            started: now,
        });
        self.access = Some((access, now));
        Ok(())
    }

    fn access_token(&self) -> anyhow::Result<String> {
        self.access
            .as_ref()
            .map(|a| a.0.clone())
            .context("no access token")
    }
}

/// Fails unless `reply` has `status` (and, when given, the OAuth error `code`).
fn expect(reply: &Reply, status: StatusCode, code: Option<&str>) -> anyhow::Result<()> {
    let error = reply.oauth_error();
    if reply.status != status || (code.is_some() && error.as_deref() != code) {
        bail!(
            "expected {status}{}, got {}",
            code.map(|c| format!(" {c}")).unwrap_or_default(),
            reply.describe()
        );
    }
    Ok(())
}

fn access_token(tokens: &serde_json::Value) -> anyhow::Result<String> {
    Ok(tokens["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned())
}

/// A request to the token endpoint with the client's credentials.
async fn token_request(shared: &Shared, client: &mut Client, form: &str) -> anyhow::Result<Reply> {
    client
        .conn
        .post(
            &shared.site.endpoints.token,
            &shared.site.client_auth(),
            form.to_owned(),
        )
        .await
}

/// Whether keyward says `token` is active (a 200 answer either way).
async fn introspect(shared: &Shared, client: &mut Client, token: &str) -> anyhow::Result<bool> {
    let reply = client
        .conn
        .post(
            &shared.site.endpoints.introspect,
            &shared.site.client_auth(),
            format!("token={}", enc(token)),
        )
        .await?;
    expect(&reply, StatusCode::OK, None)?;
    Ok(reply.json()?["active"] == true)
}

/// An authorization request on the browser's session: the code and its verifier.
async fn authorize(shared: &Shared, client: &mut Client) -> anyhow::Result<(String, String)> {
    let (path, verifier) = shared.site.authorize_path(SCOPE);
    let code = client
        .browser
        .authorize(&mut client.conn, &shared.site, &path, false)
        .await?;
    Ok((code, verifier))
}

/// A code flow on the browser's session, the code redeemed: the token response.
async fn code_flow(shared: &Shared, client: &mut Client) -> anyhow::Result<serde_json::Value> {
    let (code, verifier) = authorize(shared, client).await?;
    let reply = token_request(shared, client, &Site::code_form(&code, &verifier)).await?;
    expect(&reply, StatusCode::OK, None)?;
    reply.json()
}

/// A fresh browser signs in on the password form, one client at a time.
async fn sign_in(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let (path, verifier) = shared.site.authorize_path(SCOPE);
    let mut browser = Browser::default();
    let turn = shared.sign_in.lock().await;
    let started = Instant::now();
    let code = browser
        .authorize(&mut client.conn, &shared.site, &path, true)
        .await;
    drop(turn);
    let code = code?;
    let reply = token_request(shared, client, &Site::code_form(&code, &verifier)).await?;
    expect(&reply, StatusCode::OK, None)?;
    client.take_grant(&reply.json()?)?;
    client.browser = browser;
    client.signed_in = Some(started);
    Ok(())
}

/// The browser signs out: the confirmation page, the form posted, the session cookie
/// gone. Its grants live on.
async fn sign_out(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let page = client
        .browser
        .follow(&mut client.conn, &shared.site, &shared.paths.end_session)
        .await?;
    if !page.text().contains("signed out") {
        bail!("the sign-out did not end on the signed-out page");
    }
    if client.browser.cookie_header().contains("keyward_session=") {
        bail!("the session cookie outlived the sign-out");
    }
    client.signed_in = None;
    Ok(())
}

/// The grant's refresh token rotated.
async fn refresh(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let Some(chain) = &client.chain else {
        bail!("no grant to refresh");
    };
    let form = format!(
        "grant_type=refresh_token&refresh_token={}",
        enc(&chain.refresh_token)
    );
    let reply = token_request(shared, client, &form).await?;
    expect(&reply, StatusCode::OK, None)?;
    let tokens = reply.json()?;
    let next = tokens["refresh_token"]
        .as_str()
        .context("no refresh token in a rotation")?;
    let access = access_token(&tokens)?;
    if let Some(chain) = &mut client.chain {
        if next == chain.refresh_token {
            bail!("a rotation handed back the same refresh token");
        }
        chain.refresh_token = next.to_owned();
    }
    client.access = Some((access, Instant::now()));
    Ok(())
}

/// Revokes the refresh token (then refused: the grant is gone) or the access token
/// (then inactive), at random.
async fn revoke(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let whole_grant = client.rng.gen_bool(0.5);
    let (token, hint) = match whole_grant {
        true => (
            client
                .chain
                .as_ref()
                .map(|c| c.refresh_token.clone())
                .context("no grant to revoke")?,
            "refresh_token",
        ),
        false => (client.access_token()?, "access_token"),
    };
    let reply = client
        .conn
        .post(
            &shared.paths.revocation,
            &shared.site.client_auth(),
            format!("token={}&token_type_hint={hint}", enc(&token)),
        )
        .await?;
    expect(&reply, StatusCode::OK, None)?;
    client.access = None;
    if whole_grant {
        client.chain = None;
        let form = format!("grant_type=refresh_token&refresh_token={}", enc(&token));
        let reply = token_request(shared, client, &form).await?;
        expect(&reply, StatusCode::BAD_REQUEST, Some("invalid_grant"))
    } else if introspect(shared, client, &token).await? {
        bail!("a revoked access token was reported active");
    } else {
        Ok(())
    }
}

/// A device authorization: started, polled (pending), approved on the verification
/// page in the client's signed-in browser (consent is always asked for a device),
/// polled again (tokens).
async fn device(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let reply = client
        .conn
        .post(
            &shared.site.endpoints.device,
            &shared.site.client_auth(),
            format!("scope={}", enc(SCOPE)),
        )
        .await?;
    expect(&reply, StatusCode::OK, None)?;
    let started = reply.json()?;
    let device_code = started["device_code"]
        .as_str()
        .context("no device_code")?
        .to_owned();
    let verification = started["verification_uri_complete"]
        .as_str()
        .context("no verification_uri_complete")?;
    let verification = url::Url::parse(verification).context("verification_uri_complete")?;
    let verification = match verification.query() {
        Some(q) => format!("{}?{q}", verification.path()),
        None => verification.path().to_owned(),
    };
    let poll = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code={}",
        enc(&device_code)
    );
    let reply = token_request(shared, client, &poll).await?;
    expect(
        &reply,
        StatusCode::BAD_REQUEST,
        Some("authorization_pending"),
    )?;
    let polled = Instant::now();
    let page = client
        .browser
        .follow(&mut client.conn, &shared.site, &verification)
        .await?;
    if !page.text().contains("Device connected") {
        bail!("the device approval did not end on the device-connected page");
    }
    tokio::time::sleep_until((polled + DEVICE_POLL).into()).await;
    let reply = token_request(shared, client, &poll).await?;
    expect(&reply, StatusCode::OK, None)?;
    access_token(&reply.json()?).map(|_| ())
}

/// A fresh browser opens an authorization request, is sent to the login page, sees
/// it, and goes away.
async fn abandon_login(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let (path, _) = shared.site.authorize_path(SCOPE);
    let reply = client.conn.get(&path, &[]).await?;
    if !reply.status.is_redirection() {
        bail!(
            "authorize without a session: expected a redirect, got {}",
            reply.describe()
        );
    }
    let location = reply.location().context("redirect without Location")?;
    let base = url::Url::parse(&format!("http://{}", shared.site.addr))?;
    let login = base.join(&path)?.join(location)?;
    let target = match login.query() {
        Some(q) => format!("{}?{q}", login.path()),
        None => login.path().to_owned(),
    };
    let cookies: Vec<String> = reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next().map(str::to_owned))
        .collect();
    let cookie = cookies.join("; ");
    let reply = client
        .conn
        .get(&target, &[(header::COOKIE, cookie.as_str())])
        .await?;
    expect(&reply, StatusCode::OK, None)?;
    if !reply.text().contains("name=\"password\"") {
        bail!("the login page has no password field");
    }
    Ok(())
}
