//! GitHub (or GitHub Enterprise) as a connector: the OAuth web flow, then the REST API.
//!
//! - `GET <base>/login/oauth/authorize` with `client_id`, `redirect_uri`, `scope`,
//!   `state` and a PKCE S256 challenge;
//! - `POST <base>/login/oauth/access_token` (`Accept: application/json`), which answers
//!   200 both with a token and with `{"error": …}`;
//! - `GET <api>/user` for the stable numeric `id` (the subject) and the `login`;
//!   `GET <api>/user/emails` for the verified primary address;
//! - with `read:org`, `GET <api>/user/orgs` and `GET <api>/user/teams` (following
//!   `Link: rel="next"`), which become the groups `org` and `org:team`, as Taskcluster
//!   turns them into roles; `orgs = […]` in the configuration admits only their members.
//!
//! In a token exchange (the connector's `token_exchange = true`), a GitHub access token
//! is a subject token: keyward first asks GitHub whether the token is one of this
//! connector's OAuth app (`POST <api>/applications/<client_id>/token` with the app's
//! credentials, GitHub's "check a token"; 404 for a token of any other app, revoked or
//! made up), which also says its scopes, then reads `/user` and the rest as after a
//! sign-in ([`GithubProvider::identity_of_token`]). Checking the app matters: a token
//! of another app the person authorised (any app can get one, with no scope at all)
//! must not let that app become the person here.
//!
//! The person may grant fewer scopes than were asked for; the token answer's `scope`
//! says which ([`Granted`]). Without `user:email` the identity has no address; without
//! `read:org` it has no groups, and where `orgs` admits only members, nobody whose
//! membership could not be read is let in.

use keyward_proto::pkce::CodeVerifier;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, LINK};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::{UpstreamError, UpstreamIdentity};
use crate::config::connectors::GithubSettings;

/// The REST API version keyward speaks.
const API_VERSION: &str = "2022-11-28";
/// The most pages of organisations or teams read (100 each).
const MAX_PAGES: usize = 10;

/// GitHub, configured.
pub struct GithubProvider {
    settings: GithubSettings,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// The scopes granted, comma-separated.
    scope: Option<String>,
}

/// The scopes the person granted, from the token answer's `scope` (comma-separated, as
/// GitHub writes it). Without one, keyward assumes what it asked for.
struct Granted(Option<Vec<String>>);

impl Granted {
    fn of(scope: Option<&str>) -> Self {
        Self(scope.map(|text| {
            text.split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }))
    }

    /// Whether any of `scopes` (a scope and those that include it) was granted.
    fn any(&self, scopes: &[&str]) -> bool {
        self.0
            .as_ref()
            .is_none_or(|granted| granted.iter().any(|g| scopes.contains(&g.as_str())))
    }

    /// Whether the addresses may be read (`user:email`, or `user`).
    fn emails(&self) -> bool {
        self.any(&["user:email", "user"])
    }

    /// Whether organisation and team membership may be read (`read:org`, or the
    /// `write:org` and `admin:org` that include it).
    fn orgs(&self) -> bool {
        self.any(&["read:org", "write:org", "admin:org"])
    }
}

#[derive(Deserialize)]
struct GithubUser {
    id: u64,
    login: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct GithubEmail {
    email: String,
    verified: bool,
    primary: bool,
}

#[derive(Deserialize)]
struct GithubOrg {
    login: String,
}

#[derive(Deserialize)]
struct GithubTeam {
    slug: String,
    organization: GithubOrg,
}

impl GithubProvider {
    /// A GitHub connector.
    pub fn new(settings: GithubSettings, http: reqwest::Client) -> Self {
        Self { settings, http }
    }

    fn endpoint(base: &Url, path: &str) -> String {
        format!("{}{path}", base.as_str().trim_end_matches('/'))
    }

    /// Where to send the browser.
    pub fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        verifier: &CodeVerifier,
    ) -> Url {
        let mut url = Url::parse(&Self::endpoint(
            &self.settings.base_url,
            "/login/oauth/authorize",
        ))
        .unwrap_or_else(|_| self.settings.base_url.clone());
        url.query_pairs_mut()
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.settings.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("allow_signup", "false")
            .append_pair("code_challenge", verifier.challenge().as_str())
            .append_pair("code_challenge_method", "S256");
        url
    }

    /// Redeems GitHub's code and reads who signed in.
    pub async fn finish(
        &self,
        redirect_uri: &str,
        code: &str,
        verifier: &str,
    ) -> Result<UpstreamIdentity, UpstreamError> {
        let token_url = Self::endpoint(&self.settings.base_url, "/login/oauth/access_token");
        let response = self
            .http
            .post(&token_url)
            .header(ACCEPT, "application/json")
            .form(&[
                ("client_id", self.settings.client_id.as_str()),
                ("client_secret", self.settings.client_secret.secret()),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .map_err(|source| UpstreamError::Unreachable {
                url: token_url.clone(),
                source,
            })?;
        let answer: TokenAnswer = read_json(&token_url, response).await?;
        let granted = Granted::of(answer.scope.as_deref());
        let token = match (answer.access_token, answer.error) {
            (Some(token), None) => token,
            (_, Some(error)) => {
                return Err(UpstreamError::Refused {
                    error,
                    description: answer.error_description,
                });
            }
            (None, None) => {
                return Err(UpstreamError::Malformed {
                    url: token_url,
                    detail: "neither access_token nor error".into(),
                });
            }
        };

        self.identity(&token, &granted).await
    }

    /// Who the access token `token` of this connector's OAuth app belongs to, for a
    /// token exchange (see the module docs); [`UpstreamError::NotAllowed`] when GitHub
    /// does not know it as one of the app's tokens.
    pub async fn identity_of_token(&self, token: &str) -> Result<UpstreamIdentity, UpstreamError> {
        #[derive(Deserialize)]
        struct Checked {
            #[serde(default)]
            scopes: Option<Vec<String>>,
        }
        let url = Self::endpoint(
            &self.settings.api_url,
            &format!("/applications/{}/token", self.settings.client_id),
        );
        let response = self
            .http
            .post(&url)
            .basic_auth(
                &self.settings.client_id,
                Some(self.settings.client_secret.secret()),
            )
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .json(&serde_json::json!({ "access_token": token }))
            .send()
            .await
            .map_err(|source| UpstreamError::Unreachable {
                url: url.clone(),
                source,
            })?;
        if matches!(response.status().as_u16(), 404 | 422) {
            return Err(UpstreamError::NotAllowed(
                "GitHub does not know the token as one of this connector's app (another app's, revoked, or made up)".into(),
            ));
        }
        let checked: Checked = read_json(&url, response).await?;
        let granted = Granted(Some(checked.scopes.unwrap_or_default()));
        self.identity(token, &granted).await
    }

    /// Reads who `token` belongs to (`/user`, the verified primary address, groups)
    /// as far as `granted` allows, and checks `orgs`.
    async fn identity(
        &self,
        token: &str,
        granted: &Granted,
    ) -> Result<UpstreamIdentity, UpstreamError> {
        let reads_orgs = self.settings.reads_orgs() && granted.orgs();
        if !self.settings.orgs.is_empty() && !reads_orgs {
            return Err(UpstreamError::NotAllowed(format!(
                "GitHub did not grant keyward the read:org access it needs to check membership of {}. Sign in again and grant it.",
                self.settings.orgs.join(", ")
            )));
        }
        let user: GithubUser = self.get(token, "/user").await?.0;
        let primary = if granted.emails() {
            let emails: Vec<GithubEmail> = self.get(token, "/user/emails").await?.0;
            emails.into_iter().find(|e| e.primary && e.verified)
        } else {
            None
        };
        let mut groups = Vec::new();
        if reads_orgs {
            let orgs: Vec<GithubOrg> = self.get_all(token, "/user/orgs?per_page=100").await?;
            let teams: Vec<GithubTeam> = self.get_all(token, "/user/teams?per_page=100").await?;
            groups.extend(orgs.into_iter().map(|o| o.login));
            groups.extend(
                teams
                    .into_iter()
                    .map(|t| format!("{}:{}", t.organization.login, t.slug)),
            );
            groups.sort();
            groups.dedup();
        }
        if !self.settings.orgs.is_empty()
            && !groups.iter().any(|g| {
                self.settings
                    .orgs
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(g))
            })
        {
            return Err(UpstreamError::NotAllowed(format!(
                "The GitHub account {} is not a member of {}.",
                super::printable(&user.login),
                self.settings.orgs.join(", ")
            )));
        }
        Ok(UpstreamIdentity {
            subject: user.id.to_string(),
            email_verified: primary.is_some(),
            email: primary.map(|e| e.email),
            name: user.name.filter(|n| !n.is_empty()),
            username: Some(user.login),
            groups,
        })
    }

    /// One API call, with the `Link` header's next page (only under the API's URL, so the
    /// token never goes elsewhere).
    async fn get<T: DeserializeOwned>(
        &self,
        token: &str,
        path_or_url: &str,
    ) -> Result<(T, Option<String>), UpstreamError> {
        let url = if path_or_url.starts_with('/') {
            Self::endpoint(&self.settings.api_url, path_or_url)
        } else {
            path_or_url.to_owned()
        };
        let response = self
            .http
            .get(&url)
            .header(ACCEPT, "application/vnd.github+json")
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header("X-GitHub-Api-Version", API_VERSION)
            .send()
            .await
            .map_err(|source| UpstreamError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let next =
            next_page(response.headers()).filter(|next| is_under(&self.settings.api_url, next));
        Ok((read_json(&url, response).await?, next))
    }

    /// Every page of a list.
    async fn get_all<T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
    ) -> Result<Vec<T>, UpstreamError> {
        let mut all = Vec::new();
        let mut next = Some(path.to_owned());
        for _ in 0..MAX_PAGES {
            let Some(page) = next.take() else { break };
            let (items, following): (Vec<T>, _) = self.get(token, &page).await?;
            all.extend(items);
            next = following;
        }
        Ok(all)
    }
}

/// Reads a JSON answer, turning a non-2xx status into an error.
async fn read_json<T: DeserializeOwned>(
    url: &str,
    response: reqwest::Response,
) -> Result<T, UpstreamError> {
    let status = response.status();
    if !status.is_success() {
        return Err(UpstreamError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let body = super::guard::read_capped(url, response).await?;
    serde_json::from_slice(&body).map_err(|e| UpstreamError::Malformed {
        url: url.to_owned(),
        detail: e.to_string(),
    })
}

/// Whether `candidate` is a URL under the API's: the same scheme, host and port, no
/// user info, and a path under the API's path. Only then does the token go there: a
/// provider (or whoever tampers with its answers) must not send keyward's bearer token
/// to `https://api.github.com.evil.example/` or `https://api.github.com@evil.example/`,
/// which a comparison of text prefixes lets through.
pub fn is_under(api: &Url, candidate: &str) -> bool {
    let Ok(url) = Url::parse(candidate) else {
        return false;
    };
    let prefix = api.path().trim_end_matches('/');
    let path = url.path();
    url.scheme() == api.scheme()
        && url.host() == api.host()
        && url.port_or_known_default() == api.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none()
        && (path == prefix || path.starts_with(&format!("{prefix}/")))
}

/// The `rel="next"` URL of a `Link` header (RFC 8288).
pub fn next_page(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// Attack: a `Link` header that sends the token elsewhere. Before the fix the next
    /// page was followed when its text started with the API's URL, which all of these
    /// do.
    #[test]
    fn next_pages_outside_the_api_are_not_followed() {
        let github: Url = "https://api.github.com".parse().unwrap();
        let enterprise: Url = "https://ghe.example.com/api/v3".parse().unwrap();
        for (api, ok) in [
            (&github, "https://api.github.com/user/teams?page=2"),
            (&github, "https://API.GITHUB.COM:443/user/orgs"),
            (
                &enterprise,
                "https://ghe.example.com/api/v3/user/teams?page=2",
            ),
        ] {
            assert!(is_under(api, ok), "{ok}");
        }
        for (api, bad) in [
            (
                &github,
                "https://api.github.com.evil.example/user/teams?page=2",
            ),
            (&github, "https://api.github.com@evil.example/user/teams"),
            (&github, "https://api.github.com:8443/user/teams"),
            (&github, "http://api.github.com/user/teams"),
            (&github, "https://user:pw@api.github.com/user/teams"),
            (&enterprise, "https://ghe.example.com/api/v3x/user/teams"),
            (&enterprise, "https://ghe.example.com/other"),
            (
                &enterprise,
                "https://ghe.example.com.evil.example/api/v3/user",
            ),
            (&github, "/user/teams"),
        ] {
            assert!(!is_under(api, bad), "{bad}");
        }
    }

    #[test]
    fn granted_scopes() {
        let asked = Granted::of(None);
        assert!(asked.emails() && asked.orgs(), "no scope: what was asked");
        let narrow = Granted::of(Some("read:user"));
        assert!(!narrow.emails() && !narrow.orgs());
        let broad = Granted::of(Some("user,admin:org"));
        assert!(broad.emails() && broad.orgs());
        let spaced = Granted::of(Some("read:user, user:email read:org"));
        assert!(spaced.emails() && spaced.orgs());
        assert!(!Granted::of(Some("")).emails());
    }

    #[test]
    fn link_header_next_page() {
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_static(
                "<https://api.github.com/user/teams?page=2>; rel=\"next\", <https://api.github.com/user/teams?page=5>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_page(&headers).as_deref(),
            Some("https://api.github.com/user/teams?page=2")
        );
        headers.insert(
            LINK,
            HeaderValue::from_static("<https://api.github.com/user/teams?page=1>; rel=\"prev\""),
        );
        assert_eq!(next_page(&headers), None);
    }
}
