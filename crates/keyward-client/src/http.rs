//! The client's requests: discovery (OpenID Connect Discovery 1.0, RFC 8414), device
//! authorization and polling (RFC 8628), refresh (RFC 6749 §6, or the Julia package
//! server's `GET refresh_url`), userinfo (OpenID Connect Core §5.3), revocation
//! (RFC 7009).
//!
//! Every function takes the `reqwest::Client` to use; every body is read with a 1 MiB
//! cap; an OAuth error body becomes [`ClientError::Refused`], any other failure names the
//! URL. Credentials are only ever sent over https, or plain http to a loopback address
//! ([`check_secure`]).

use std::net::IpAddr;
use std::time::Duration;

use keyward_proto::device::DeviceAuthorizationResponse;
use keyward_proto::discovery::ProviderEndpoints;
use keyward_proto::token::TokenResponse;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::{ClientError, sanitize};
use crate::tokenfile::TokenFile;

/// The largest response body read.
const MAX_BODY: usize = 1 << 20;

/// The RFC 8628 grant type.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// An HTTP client for talking to servers: `timeout` per request (connecting included),
/// no redirects followed (an OAuth endpoint that redirects is misconfigured, and a
/// redirected POST would lose its body), a `keyward/<version>` user agent.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| ClientError::Unreachable {
            url: "(client setup)".into(),
            source,
        })
}

/// Refuses URLs that credentials must not be sent to: anything but https, except plain
/// http to `localhost` or a loopback address (as the Julia client does).
pub fn check_secure(url: &Url) -> Result<(), ClientError> {
    let refuse = |reason| {
        Err(ClientError::BadServerUrl {
            url: url.to_string(),
            reason,
        })
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                refuse("plain http is only accepted for localhost; use https")
            }
        }
        _ => refuse("only https (or http to localhost) URLs are accepted"),
    }
}

/// Finds the server's endpoints: `<server>/.well-known/openid-configuration`, then
/// RFC 8414's `/.well-known/oauth-authorization-server<path>`. The document's `issuer`
/// must be the server itself (OpenID Connect Discovery §4.3), and every endpoint must
/// pass [`check_secure`].
pub async fn discover(
    http: &reqwest::Client,
    server: &Url,
) -> Result<ProviderEndpoints, ClientError> {
    check_secure(server)?;
    let base = server.as_str().trim_end_matches('/');
    let oidc = format!("{base}/.well-known/openid-configuration");
    let metadata: ProviderEndpoints = match get_json(http, &oidc).await {
        Err(ClientError::Status { status: 404, .. }) => {
            let mut rfc8414 = server.clone();
            let path = server.path().trim_end_matches('/').to_owned();
            rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
            get_json(http, rfc8414.as_str()).await?
        }
        other => other?,
    };
    let discovery_error = |reason: String| ClientError::Discovery {
        server: server.to_string(),
        reason,
    };
    if metadata.issuer.trim_end_matches('/') != base {
        return Err(discovery_error(format!(
            "its metadata names another issuer, {}",
            sanitize(&metadata.issuer)
        )));
    }
    let endpoints = [
        Some(&metadata.token_endpoint),
        metadata.authorization_endpoint.as_ref(),
        metadata.device_authorization_endpoint.as_ref(),
        metadata.revocation_endpoint.as_ref(),
    ];
    for endpoint in endpoints.into_iter().flatten() {
        let url = Url::parse(endpoint)
            .map_err(|e| discovery_error(format!("bad endpoint {}: {e}", sanitize(endpoint))))?;
        check_secure(&url)?;
    }
    Ok(metadata)
}

/// Starts a device authorization (RFC 8628 §3.1) as the public client `client_id`.
pub async fn device_authorization(
    http: &reqwest::Client,
    endpoint: &str,
    client_id: &str,
    scope: &str,
) -> Result<DeviceAuthorizationResponse, ClientError> {
    let mut form = vec![("client_id", client_id)];
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    let response: DeviceAuthorizationResponse =
        oauth_json(http.post(endpoint).form(&form), endpoint).await?;
    if response.device_code.is_empty() || response.user_code.is_empty() {
        return Err(bad_response(endpoint, "empty device_code or user_code"));
    }
    Ok(response)
}

/// Polls the token endpoint once with a device code (RFC 8628 §3.4). The answer is
/// judged by [`crate::device::DevicePoll::decide`].
pub async fn poll_device(
    http: &reqwest::Client,
    token_endpoint: &str,
    client_id: &str,
    device_code: &str,
) -> Result<TokenResponse, ClientError> {
    let form = [
        ("grant_type", DEVICE_CODE_GRANT),
        ("client_id", client_id),
        ("device_code", device_code),
    ];
    token_response(http.post(token_endpoint).form(&form), token_endpoint).await
}

/// Redeems an authorization code (RFC 6749 §4.1.3) as the public client `client_id`,
/// proving possession of the PKCE `verifier` (RFC 7636 §4.5).
pub async fn redeem_code(
    http: &reqwest::Client,
    token_endpoint: &str,
    client_id: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &keyward_proto::pkce::CodeVerifier,
) -> Result<TokenResponse, ClientError> {
    check_secure(&parse_url(token_endpoint)?)?;
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier.secret()),
    ];
    token_response(http.post(token_endpoint).form(&form), token_endpoint).await
}

/// Refreshes at an OAuth token endpoint (RFC 6749 §6) as the public client `client_id`.
pub async fn refresh(
    http: &reqwest::Client,
    token_endpoint: &str,
    client_id: &str,
    refresh_token: &str,
) -> Result<TokenResponse, ClientError> {
    check_secure(&parse_url(token_endpoint)?)?;
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", client_id),
        ("refresh_token", refresh_token),
    ];
    token_response(http.post(token_endpoint).form(&form), token_endpoint).await
}

/// Exchanges `subject_token` (an access token of `client_id`) for a token for
/// `audience` with `scope` (RFC 8693 §2.1), as the public client `client_id`.
pub async fn exchange(
    http: &reqwest::Client,
    token_endpoint: &str,
    client_id: &str,
    subject_token: &str,
    audience: &str,
    scope: &str,
) -> Result<TokenResponse, ClientError> {
    use keyward_proto::exchange::{TOKEN_EXCHANGE_GRANT, token_type};
    check_secure(&parse_url(token_endpoint)?)?;
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("client_id", client_id),
        ("subject_token", subject_token),
        ("subject_token_type", token_type::ACCESS_TOKEN),
        ("requested_token_type", token_type::ACCESS_TOKEN),
        ("audience", audience),
    ];
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    token_response(http.post(token_endpoint).form(&form), token_endpoint).await
}

/// Refreshes the way the Julia package client does: `GET refresh_url` with the refresh
/// token as bearer; the answer is a complete token file in TOML. A 4xx answer is a
/// refusal.
pub async fn refresh_julia(
    http: &reqwest::Client,
    refresh_url: &str,
    refresh_token: &str,
) -> Result<TokenFile, ClientError> {
    check_secure(&parse_url(refresh_url)?)?;
    let request = http.get(refresh_url).bearer_auth(refresh_token);
    let (status, body) = send(request, refresh_url).await?;
    if (400..500).contains(&status) {
        return Err(ClientError::Refused {
            url: refresh_url.to_owned(),
            error: format!("HTTP {status}"),
            description: None,
        });
    }
    if status != 200 {
        return Err(ClientError::Status {
            url: refresh_url.to_owned(),
            status,
        });
    }
    read_julia_token_file(refresh_url, &body)
}

/// Reads the answer of a Julia `GET refresh_url` (fetched from `url`): a complete token
/// file in TOML, with an access token and a refresh token.
pub fn read_julia_token_file(url: &str, body: &[u8]) -> Result<TokenFile, ClientError> {
    let text = std::str::from_utf8(body).map_err(|_| bad_response(url, "not UTF-8"))?;
    let token: TokenFile =
        toml::from_str(text).map_err(|_| bad_response(url, "not a token file in TOML"))?;
    if token.access_token.is_empty() || token.refresh_token.is_none() {
        return Err(bad_response(url, "the token file lacks tokens"));
    }
    Ok(token)
}

/// The user's claims from the userinfo endpoint (OpenID Connect Core §5.3).
pub async fn userinfo(
    http: &reqwest::Client,
    endpoint: &str,
    access_token: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, ClientError> {
    check_secure(&parse_url(endpoint)?)?;
    get_json_with(http.get(endpoint).bearer_auth(access_token), endpoint).await
}

/// Revokes a token (RFC 7009 §2.1) as the public client `client_id`. An unknown token
/// is not an error (§2.2).
pub async fn revoke(
    http: &reqwest::Client,
    endpoint: &str,
    client_id: &str,
    token: &str,
    hint: &str,
) -> Result<(), ClientError> {
    check_secure(&parse_url(endpoint)?)?;
    let form = [
        ("token", token),
        ("token_type_hint", hint),
        ("client_id", client_id),
    ];
    let (status, body) = send(http.post(endpoint).form(&form), endpoint).await?;
    if status == 200 {
        Ok(())
    } else {
        Err(oauth_error(endpoint, status, &body))
    }
}

fn parse_url(url: &str) -> Result<Url, ClientError> {
    Url::parse(url).map_err(|_| ClientError::BadServerUrl {
        url: sanitize(url),
        reason: "not a URL",
    })
}

fn bad_response(url: &str, reason: &str) -> ClientError {
    ClientError::BadResponse {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A token endpoint answer: a `Bearer` token response, or the error.
async fn token_response(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<TokenResponse, ClientError> {
    let tokens: TokenResponse = oauth_json(request, url).await?;
    if !tokens.token_type.eq_ignore_ascii_case("bearer") {
        return Err(bad_response(url, "the token type is not Bearer"));
    }
    if tokens.access_token.is_empty() {
        return Err(bad_response(url, "the access token is empty"));
    }
    Ok(tokens)
}

/// Sends a request to an OAuth endpoint: 200 JSON is the answer, an error body a
/// refusal.
async fn oauth_json<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<T, ClientError> {
    let (status, body) = send(request.header("accept", "application/json"), url).await?;
    if status != 200 {
        return Err(oauth_error(url, status, &body));
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
        url: url.to_owned(),
        reason: sanitize(&e.to_string()),
    })
}

async fn get_json<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, ClientError> {
    get_json_with(http.get(url), url).await
}

async fn get_json_with<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<T, ClientError> {
    let (status, body) = send(request.header("accept", "application/json"), url).await?;
    if status != 200 {
        return Err(ClientError::Status {
            url: url.to_owned(),
            status,
        });
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
        url: url.to_owned(),
        reason: sanitize(&e.to_string()),
    })
}

/// An error body (RFC 6749 §5.2) as a refusal; anything else as a bare status.
fn oauth_error(url: &str, status: u16, body: &[u8]) -> ClientError {
    /// Any provider's error body, whatever its code.
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
        #[serde(default)]
        error_description: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) if (400..500).contains(&status) => ClientError::Refused {
            url: url.to_owned(),
            error: sanitize(&body.error),
            description: body.error_description.as_deref().map(sanitize),
        },
        _ => ClientError::Status {
            url: url.to_owned(),
            status,
        },
    }
}

/// Sends and reads the whole body, at most [`MAX_BODY`] bytes.
async fn send(request: reqwest::RequestBuilder, url: &str) -> Result<(u16, Vec<u8>), ClientError> {
    let unreachable = |source| ClientError::Unreachable {
        url: url.to_owned(),
        source,
    };
    let mut response = request.send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(bad_response(url, "the body is larger than 1 MiB"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_over_https_or_to_loopback_only() {
        for ok in [
            "https://id.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:1/x",
            "http://[::1]:9/",
        ] {
            assert!(check_secure(&Url::parse(ok).unwrap()).is_ok(), "{ok}");
        }
        for bad in [
            "http://id.example.com",
            "http://10.0.0.1",
            "ftp://127.0.0.1",
            "file:///etc/passwd",
        ] {
            assert!(check_secure(&Url::parse(bad).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_bodies_become_refusals_and_the_rest_statuses() {
        let refused = oauth_error(
            "u",
            400,
            br#"{"error":"invalid_grant","error_description":"gone\u001b"}"#,
        );
        assert!(
            matches!(&refused, ClientError::Refused { error, description: Some(d), .. }
                if error == "invalid_grant" && d == "gone")
        );
        assert!(matches!(
            oauth_error("u", 502, b"<html>"),
            ClientError::Status { status: 502, .. }
        ));
        assert!(matches!(
            oauth_error("u", 500, br#"{"error":"server_error"}"#),
            ClientError::Status { status: 500, .. }
        ));
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_transient() {
        // Bound, so that no other test is handed the port, but not listening, so that
        // connections to it are refused.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let http = http_client(Duration::from_secs(5)).unwrap();
        let server = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = discover(&http, &server).await.unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
        assert!(err.is_transient());
        assert!(
            err.to_string()
                .starts_with("cannot reach http://127.0.0.1:")
        );
    }
}
