//! Short-lived tokens for one service, exchanged from the stored login (RFC 8693):
//! what `keyward token --audience A [--scope S …]` prints.
//!
//! Each (audience, scopes) pair has its own cache file beside the login,
//! `<server dir>/exchanged/<hash>.toml` (0600, in the 0700 server directory), written
//! atomically like the login itself. A cached token is used while more than the margin
//! is left; otherwise one process renews it under the server's token lock (the lock
//! refreshes take), and the others, once they get the lock, find the renewed file.
//! Before exchanging, the login is refreshed when less than [`SUBJECT_MARGIN`] is left
//! of it, because an exchanged token never outlives the token it was exchanged from.

use std::path::Path;
use std::time::Duration;

use keyward_proto::TokenHash;
use url::Url;

use crate::error::ClientError;
use crate::login::{Flow, unix_now};
use crate::tokenfile::{TokenFile, TokenStore, server_dir};

/// How much must be left of the login's access token before it is exchanged (the
/// exchanged token cannot live longer).
pub const SUBJECT_MARGIN: Duration = Duration::from_secs(5 * 60);

/// What an exchanged token is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The service (`audience`).
    pub audience: String,
    /// The scopes asked for, sorted, each once.
    pub scopes: Vec<String>,
}

impl Target {
    /// A target for `audience` with `scopes` (order and repeats do not matter).
    pub fn new(audience: impl Into<String>, scopes: impl IntoIterator<Item = String>) -> Self {
        let mut scopes: Vec<String> = scopes.into_iter().filter(|s| !s.is_empty()).collect();
        scopes.sort();
        scopes.dedup();
        Self {
            audience: audience.into(),
            scopes,
        }
    }

    /// The scopes as the request's `scope` parameter.
    pub fn scope(&self) -> String {
        self.scopes.join(" ")
    }

    /// The cache file of this target for `server` under `home`.
    pub fn cache(&self, home: &Path, server: &Url) -> Result<TokenStore, ClientError> {
        let key = format!("{}\n{}", self.audience, self.scope());
        let name: String = TokenHash::of(&key).as_str().chars().take(22).collect();
        let dir = server_dir(home, server)?.join("exchanged");
        Ok(TokenStore::at(dir.join(format!("{name}.toml"))))
    }
}

/// A token for `target` with more than `margin` left: the cached one, or one exchanged
/// now from `flow`'s login (refreshed first when needed), which is then cached.
pub async fn exchanged_token(
    flow: &mut Flow,
    home: &Path,
    target: &Target,
    margin: Duration,
) -> Result<TokenFile, ClientError> {
    let cache = target.cache(home, flow.server())?;
    let margin = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
    if let Some(token) = usable(&cache, target, margin)? {
        return Ok(token);
    }
    // The login, with enough life left to be worth exchanging (this takes and releases
    // the token lock when it refreshes).
    let login = flow.run_with_margin(SUBJECT_MARGIN).await?;
    let store = flow.store().clone();
    let lock_timeout = flow.options().lock_timeout;
    let _lock = tokio::task::spawn_blocking(move || store.lock(lock_timeout))
        .await
        .map_err(|e| ClientError::BadResponse {
            url: String::new(),
            reason: format!("the lock task failed: {e}"),
        })??;
    // Another process may have renewed it while this one waited.
    if let Some(token) = usable(&cache, target, margin)? {
        return Ok(token);
    }
    let client_id = login
        .client_id
        .clone()
        .unwrap_or_else(|| flow.options().client_id.clone());
    let endpoint = flow.provider().await?.token_endpoint.clone();
    let answer = crate::http::exchange(
        flow.http(),
        &endpoint,
        &client_id,
        &login.access_token,
        &target.audience,
        &target.scope(),
    )
    .await?;
    let now = unix_now();
    let expires_in = answer.expires_in.unwrap_or(0);
    let mut token = TokenFile {
        access_token: answer.access_token,
        expires_at: now.saturating_add(i64::try_from(expires_in).unwrap_or(0)),
        expires_in: Some(expires_in),
        server: Some(flow.server().to_string()),
        client_id: Some(client_id),
        scope: Some(answer.scope.to_string()),
        ..TokenFile::default()
    };
    token.extra.insert(
        "audience".into(),
        toml::Value::String(target.audience.clone()),
    );
    cache.save(&token)?;
    Ok(token)
}

/// The cached token of `target`, if it is for that target and has more than `margin`
/// left.
fn usable(
    cache: &TokenStore,
    target: &Target,
    margin: i64,
) -> Result<Option<TokenFile>, ClientError> {
    let Some(token) = cache.load()? else {
        return Ok(None);
    };
    let for_target =
        token.extra.get("audience").and_then(toml::Value::as_str) == Some(target.audience.as_str());
    Ok((for_target && token.is_fresh(unix_now(), margin)).then_some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_names_one_cache_file_whatever_the_order_of_its_scopes() {
        let home = Path::new("/home/a/.keyward");
        let server = Url::parse("https://id.example.com").unwrap();
        let one = Target::new("queue", ["b".to_owned(), "a".to_owned(), "a".to_owned()]);
        let two = Target::new("queue", ["a".to_owned(), "b".to_owned()]);
        assert_eq!(one, two);
        assert_eq!(one.scope(), "a b");
        let path = one.cache(home, &server).unwrap();
        assert_eq!(path.path(), two.cache(home, &server).unwrap().path());
        assert!(
            path.path()
                .starts_with("/home/a/.keyward/servers/id.example.com/exchanged/")
        );
        let other = Target::new("queue", ["a".to_owned()])
            .cache(home, &server)
            .unwrap();
        assert_ne!(path.path(), other.path());
        let elsewhere = Target::new("secrets", ["a".to_owned(), "b".to_owned()])
            .cache(home, &server)
            .unwrap();
        assert_ne!(path.path(), elsewhere.path());
    }
}
