//! Administrative operations on the store, behind `keyward client|user|key|backup|restore`
//! and the start-up sync of the clients and users declared in the configuration file.

use keyward_proto::{ClientSecret, Password, ScopeSet};

use crate::at_rest::{self, AtRestError, AtRestKey};
use crate::config::{ClientConfig, Config, UserConfig};
use crate::domain::SigningAlg;
use crate::domain::{self, Client, StoredKey, User, now};
use crate::keys::{self, KeyError};
use crate::password::{self, PasswordError};
use crate::store::backup::{self, BackupError, Inspection, Restored};
use crate::store::cache;
use crate::store::{DeclaredKind, Store, StoreError};

/// An administrative failure.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Password hashing failed.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// Key handling failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The named record does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The record changed (or went) between reading and writing it; nothing was
    /// written.
    #[error("{0} changed meanwhile; read it again and retry")]
    Changed(String),
    /// The record is declared in the configuration file, which would put it back as
    /// declared at the next start or reload.
    #[error("{0} is declared in the configuration file: change it there (and reload)")]
    Declared(String),
    /// An argument is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A backup or a restore failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// A backup's sealed secrets do not open with the configured key file.
    #[error(
        "{what} in {file} is encrypted at rest and cannot be read (a backup needs the key file of the server that made it)"
    )]
    Sealed {
        /// Which secret.
        what: String,
        /// The backup.
        file: String,
        /// Why.
        #[source]
        source: AtRestError,
    },
}

/// The scopes a client gets when none are given.
pub const DEFAULT_CLIENT_SCOPES: &str = "openid profile email offline_access";
/// The grant types a client gets when none are given.
pub const DEFAULT_GRANT_TYPES: [&str; 2] = ["authorization_code", "refresh_token"];

/// What `keyward client add` and the config file describe.
#[derive(Clone, Debug, Default)]
pub struct NewClient {
    /// The client id.
    pub client_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Whether the client is public (no secret).
    pub public: bool,
    /// The secret to use; generated when `None` for a confidential client.
    pub secret: Option<ClientSecret>,
    /// Redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// Grant types; defaults to [`DEFAULT_GRANT_TYPES`].
    pub grant_types: Vec<String>,
    /// Scopes; defaults to [`DEFAULT_CLIENT_SCOPES`].
    pub scopes: Vec<String>,
    /// No consent page.
    pub skip_consent: bool,
    /// A resource server: may introspect any token.
    pub introspect: bool,
    /// ID token algorithm.
    pub id_token_alg: Option<SigningAlg>,
}

impl NewClient {
    /// Validates and turns the description into a client record, generating the secret
    /// of a confidential client when none was given. Returns the secret to show once.
    pub fn build(self) -> Result<(Client, Option<ClientSecret>), AdminError> {
        domain::validate_client_id(&self.client_id).map_err(AdminError::Invalid)?;
        if let Some(name) = &self.name
            && (name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control))
        {
            return Err(AdminError::Invalid(
                "the name must be 1 to 200 characters, none of them control characters".into(),
            ));
        }
        for uri in self
            .redirect_uris
            .iter()
            .chain(&self.post_logout_redirect_uris)
        {
            domain::validate_redirect_uri(uri).map_err(AdminError::Invalid)?;
        }
        let grant_types: Vec<String> = if self.grant_types.is_empty() {
            DEFAULT_GRANT_TYPES
                .iter()
                .map(|g| (*g).to_owned())
                .collect()
        } else {
            self.grant_types
        };
        for grant in &grant_types {
            if !keyward_proto::token::GRANT_TYPES.contains(&grant.as_str()) {
                return Err(AdminError::Invalid(format!("unknown grant type {grant:?}")));
            }
        }
        if self.public && grant_types.iter().any(|g| g == "client_credentials") {
            return Err(AdminError::Invalid(
                "a public client cannot use client_credentials".into(),
            ));
        }
        if grant_types.iter().any(|g| g == "authorization_code") && self.redirect_uris.is_empty() {
            return Err(AdminError::Invalid(
                "authorization_code needs at least one redirect URI".into(),
            ));
        }
        let scopes = if self.scopes.is_empty() {
            DEFAULT_CLIENT_SCOPES.to_owned()
        } else {
            self.scopes.join(" ")
        };
        let scopes = ScopeSet::parse(&scopes).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let secret = match (self.public, self.secret) {
            (true, _) => None,
            (false, Some(secret)) => Some(secret),
            (false, None) => Some(ClientSecret::generate()),
        };
        let client = Client {
            name: self.name.unwrap_or_else(|| self.client_id.clone()),
            client_id: self.client_id,
            secret_hash: secret.as_ref().map(ClientSecret::hash),
            previous_secret: None,
            redirect_uris: self.redirect_uris,
            post_logout_redirect_uris: self.post_logout_redirect_uris,
            grant_types,
            scopes,
            skip_consent: self.skip_consent,
            introspect: self.introspect,
            id_token_alg: self.id_token_alg.unwrap_or(SigningAlg::ES256),
            created_at: now(),
        };
        Ok((client, secret))
    }
}

impl From<&ClientConfig> for NewClient {
    fn from(c: &ClientConfig) -> Self {
        Self {
            client_id: c.client_id.clone(),
            name: c.name.clone(),
            public: c.client_secret.is_none(),
            secret: c.client_secret.clone(),
            redirect_uris: c.redirect_uris.clone(),
            post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
            grant_types: c.grant_types.clone().unwrap_or_default(),
            scopes: c.scopes.clone().unwrap_or_default(),
            skip_consent: c.skip_consent,
            introspect: c.introspect,
            id_token_alg: c.id_token_signed_response_alg,
        }
    }
}

/// Registers a new client; the returned secret is shown once and never stored.
pub async fn add_client(
    store: &dyn Store,
    new: NewClient,
) -> Result<(Client, Option<ClientSecret>), AdminError> {
    let (client, secret) = new.build()?;
    store.insert_client(&client).await?;
    Ok((client, secret))
}

/// Removes a client and everything issued to it. Returns once every running server on
/// this database has stopped using it: each keeps the clients in memory and drops its
/// copy within [`cache::FRESH_FOR`] of the change ([`crate::store::cache`]).
pub async fn remove_client(store: &dyn Store, client_id: &str) -> Result<(), AdminError> {
    not_declared(store, client_id).await?;
    if store.delete_client(client_id).await? {
        tokio::time::sleep(cache::FRESH_FOR + cache::POLL_EVERY).await;
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("client {client_id:?}")))
    }
}

/// What may change in a registered client (`PATCH /admin/api/clients/{id}`): each
/// field given replaces the stored one; the secret and the id stay.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientChanges {
    /// Display name.
    pub name: Option<String>,
    /// Redirect URIs.
    pub redirect_uris: Option<Vec<String>>,
    /// Post-logout redirect URIs.
    pub post_logout_redirect_uris: Option<Vec<String>>,
    /// Grant types.
    pub grant_types: Option<Vec<String>>,
    /// Scopes.
    pub scopes: Option<Vec<String>>,
    /// No consent page.
    pub skip_consent: Option<bool>,
    /// A resource server: may introspect any token.
    pub introspect: Option<bool>,
}

/// Changes a registered client ([`changed_client`], then stored unless it changed
/// meanwhile). Its secret, and so the tokens issued to it, stay valid.
pub async fn update_client(
    store: &dyn Store,
    client_id: &str,
    changes: ClientChanges,
) -> Result<Client, AdminError> {
    let updated = changed_client(store, client_id, changes).await?;
    store_change(store, &updated).await?;
    Ok(updated)
}

/// Writes a change of a client made from the record as read (whose secret hash is
/// `changed`'s): [`AdminError::Changed`] when another change came first.
pub async fn store_change(store: &dyn Store, changed: &Client) -> Result<(), AdminError> {
    if store
        .update_client(changed, changed.secret_hash.as_ref())
        .await?
    {
        Ok(())
    } else {
        Err(AdminError::Changed(format!(
            "client {:?}",
            changed.client_id
        )))
    }
}

/// Refuses to change a client the configuration file declares (a start or reload
/// would write it back as declared, its old secret included).
pub async fn not_declared(store: &dyn Store, client_id: &str) -> Result<(), AdminError> {
    if store
        .declared(DeclaredKind::Client)
        .await?
        .iter()
        .any(|id| id == client_id)
    {
        return Err(AdminError::Declared(format!("client {client_id:?}")));
    }
    Ok(())
}

/// The record `changes` would make of a registered client, checked as a new one would
/// be ([`NewClient::build`]), with its secret and creation time kept; nothing stored.
pub async fn changed_client(
    store: &dyn Store,
    client_id: &str,
    changes: ClientChanges,
) -> Result<Client, AdminError> {
    let client = store
        .get_client(client_id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("client {client_id:?}")))?;
    not_declared(store, client_id).await?;
    // An empty list would mean "the defaults" to a new client; here it can only be a
    // mistake.
    if changes.grant_types.as_ref().is_some_and(Vec::is_empty)
        || changes.scopes.as_ref().is_some_and(Vec::is_empty)
    {
        return Err(AdminError::Invalid(
            "grant_types and scopes, when given, name at least one".into(),
        ));
    }
    let public = client.is_public();
    let new = NewClient {
        client_id: client.client_id.clone(),
        name: Some(changes.name.unwrap_or(client.name)),
        public,
        secret: None,
        redirect_uris: changes.redirect_uris.unwrap_or(client.redirect_uris),
        post_logout_redirect_uris: changes
            .post_logout_redirect_uris
            .unwrap_or(client.post_logout_redirect_uris),
        grant_types: changes.grant_types.unwrap_or(client.grant_types),
        scopes: changes
            .scopes
            .unwrap_or_else(|| client.scopes.iter().map(String::from).collect()),
        skip_consent: changes.skip_consent.unwrap_or(client.skip_consent),
        introspect: changes.introspect.unwrap_or(client.introspect),
        id_token_alg: Some(client.id_token_alg),
    };
    let (mut updated, _) = new.build()?;
    updated.secret_hash = client.secret_hash;
    updated.previous_secret = client.previous_secret;
    updated.created_at = client.created_at;
    Ok(updated)
}

/// The longest grace period of a rotated client secret.
pub const MAX_SECRET_GRACE: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Gives a confidential client a new secret, returned to be shown once. The old one is
/// still accepted for `grace` (at most [`MAX_SECRET_GRACE`]; zero ends it at once),
/// and so are the tokens issued under it; a secret older than that is forgotten.
pub async fn rotate_client_secret(
    store: &dyn Store,
    client_id: &str,
    grace: std::time::Duration,
    now: i64,
) -> Result<(Client, ClientSecret), AdminError> {
    if grace > MAX_SECRET_GRACE {
        return Err(AdminError::Invalid(format!(
            "the grace period is at most {} days",
            MAX_SECRET_GRACE.as_secs() / 86_400
        )));
    }
    let mut client = store
        .get_client(client_id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("client {client_id:?}")))?;
    not_declared(store, client_id).await?;
    let Some(old) = client.secret_hash.take() else {
        return Err(AdminError::Invalid(format!(
            "client {client_id:?} is public: it has no secret"
        )));
    };
    let secret = ClientSecret::generate();
    client.secret_hash = Some(secret.hash());
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    client.previous_secret = (grace > 0).then(|| domain::PreviousSecret {
        hash: old.clone(),
        until: now.saturating_add(grace),
    });
    if !store.update_client(&client, Some(&old)).await? {
        return Err(AdminError::Changed(format!("client {client_id:?}")));
    }
    Ok((client, secret))
}

/// Ends every session of a user, revokes every grant (so their refresh and access
/// tokens stop working) and forgets their set-password link, without disabling the
/// account: they can sign in again.
pub async fn revoke_user_access(store: &dyn Store, username: &str) -> Result<User, AdminError> {
    let user = user_by_name(store, username).await?;
    store.delete_user_sessions(&user.id).await?;
    store.revoke_user_grants(&user.id).await?;
    store.delete_password_links(&user.id).await?;
    Ok(user)
}

/// A new random user id.
pub fn new_user_id() -> String {
    keyward_proto::secret::random_urlsafe(16)
}

/// Creates a local user with a password.
pub async fn add_user(
    store: &dyn Store,
    username: &str,
    email: Option<String>,
    name: Option<String>,
    password: Password,
) -> Result<User, AdminError> {
    domain::validate_username(username).map_err(AdminError::Invalid)?;
    check_password_strength(&password)?;
    let user = User {
        id: new_user_id(),
        username: username.to_owned(),
        email_verified: email.is_some(),
        email,
        name,
        password_hash: Some(password::hash(password).await?),
        disabled: false,
        created_at: now(),
    };
    store.insert_user(&user).await?;
    Ok(user)
}

/// Refuses a password shorter than 8 characters or longer than 1024 bytes.
pub fn check_password_strength(password: &Password) -> Result<(), AdminError> {
    if password.secret().chars().count() < 8 {
        return Err(AdminError::Invalid(
            "a password needs at least 8 characters".into(),
        ));
    }
    if password.secret().len() > 1024 {
        return Err(AdminError::Invalid(
            "a password may have at most 1024 bytes".into(),
        ));
    }
    Ok(())
}

async fn user_by_name(store: &dyn Store, username: &str) -> Result<User, AdminError> {
    store
        .get_user_by_username(username)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("user {username:?}")))
}

/// Sets a user's password and ends their sessions.
pub async fn set_password(
    store: &dyn Store,
    username: &str,
    password: Password,
) -> Result<(), AdminError> {
    check_password_strength(&password)?;
    let user = user_by_name(store, username).await?;
    store
        .set_password_hash(&user.id, &password::hash(password).await?)
        .await?;
    store.delete_user_sessions(&user.id).await?;
    Ok(())
}

/// Disables (or re-enables) a user. Disabling ends their sessions, revokes every
/// grant (so their refresh tokens and access tokens stop working) and forgets their
/// set-password link.
pub async fn set_disabled(
    store: &dyn Store,
    username: &str,
    disabled: bool,
) -> Result<User, AdminError> {
    let user = user_by_name(store, username).await?;
    store.set_user_disabled(&user.id, disabled).await?;
    if disabled {
        store.delete_user_sessions(&user.id).await?;
        store.revoke_user_grants(&user.id).await?;
        store.delete_password_links(&user.id).await?;
    }
    Ok(User { disabled, ..user })
}

/// Rotates the signing keys (sealing the new ones with `at_rest` when configured).
pub async fn rotate_keys(
    store: &dyn Store,
    at_rest: Option<std::sync::Arc<crate::at_rest::AtRestKey>>,
) -> Result<Vec<StoredKey>, AdminError> {
    Ok(keys::rotate(store, at_rest).await?)
}

/// What [`sync_config`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Clients the file declares, written.
    pub clients: usize,
    /// Users the file declares, written.
    pub users: usize,
    /// Clients the file declared last time and no longer does: removed, with
    /// everything issued to them.
    pub removed_clients: Vec<String>,
    /// Users the file declared last time and no longer does: disabled (sessions ended,
    /// grants revoked), not deleted, so that their identities and `sub` survive a
    /// mistake; `keyward user enable` brings one back.
    pub disabled_users: Vec<String>,
}

/// Writes the clients and users of the configuration file into the store, so that a
/// deployment is reproducible from one file: at start and at every reload. Config
/// clients replace stored ones of the same id; config users keep their id (and so
/// their `sub`) and disabled flag across restarts. What the file declared at the last
/// sync and no longer does is taken out of service ([`Synced`]); clients and users
/// added with the admin commands are never touched.
pub async fn sync_config(store: &dyn Store, config: &Config) -> Result<Synced, AdminError> {
    let mut synced = Synced::default();
    // Everything is checked before anything is written.
    let mut clients = Vec::with_capacity(config.clients.len());
    for declared in &config.clients {
        clients.push(NewClient::from(declared).build()?.0);
    }
    let mut users = Vec::with_capacity(config.users.len());
    for declared in &config.users {
        users.push(config_user(declared).await?);
    }
    for client in &clients {
        store.upsert_client(client).await?;
    }
    for user in &users {
        store.sync_user(user).await?;
    }
    synced.clients = clients.len();
    synced.users = users.len();

    let client_ids: Vec<String> = clients.iter().map(|c| c.client_id.clone()).collect();
    for gone in store.declared(DeclaredKind::Client).await? {
        if !client_ids.contains(&gone) && store.delete_client(&gone).await? {
            synced.removed_clients.push(gone);
        }
    }
    store
        .set_declared(DeclaredKind::Client, &client_ids)
        .await?;
    let usernames: Vec<String> = users.iter().map(|u| u.username.clone()).collect();
    for gone in store.declared(DeclaredKind::User).await? {
        if usernames.contains(&gone) {
            continue;
        }
        if let Some(user) = store.get_user_by_username(&gone).await?
            && !user.disabled
        {
            set_disabled(store, &gone, true).await?;
            synced.disabled_users.push(gone);
        }
    }
    store.set_declared(DeclaredKind::User, &usernames).await?;

    let pkg = &config.pkg_auth;
    let declared = config.clients.iter().any(|c| c.client_id == pkg.client_id);
    if pkg.enabled && !declared {
        match store.get_client(&pkg.client_id).await? {
            None => {
                let (client, _) = pkg_client(&pkg.client_id).build()?;
                store.insert_client(&client).await?;
            }
            // Registered by an earlier version: it gains the grants and redirect URIs
            // added since (token exchange for `keyward token --audience`, the code
            // flow over a loopback redirect for `keyward login` in the browser).
            Some(mut client) => {
                let current = pkg_client(&pkg.client_id);
                let grants = missing(&client.grant_types, current.grant_types);
                let redirects = missing(&client.redirect_uris, current.redirect_uris);
                if !grants.is_empty() || !redirects.is_empty() {
                    client.grant_types.extend(grants);
                    client.redirect_uris.extend(redirects);
                    store.upsert_client(&client).await?;
                }
            }
        }
    }
    Ok(synced)
}

/// The items of `wanted` that `have` lacks.
fn missing(have: &[String], wanted: Vec<String>) -> Vec<String> {
    wanted.into_iter().filter(|w| !have.contains(w)).collect()
}

/// The redirect URIs of `keyward login` in the browser: a one-shot listener on a
/// loopback address, whose port RFC 8252 §7.3 lets vary
/// ([`crate::domain::redirect_uri_matches`]).
pub const LOOPBACK_REDIRECT_URIS: [&str; 2] =
    ["http://127.0.0.1/callback", "http://[::1]/callback"];

/// The public client of the Julia package-server protocol, also `keyward login`'s
/// default: device flow, the code flow with PKCE over a loopback redirect (RFC 8252),
/// refresh, and token exchange (`keyward token --audience`). It never skips the
/// consent page: any program on the machine can start a login as this client
/// (RFC 8252 §8.6).
pub fn pkg_client(client_id: &str) -> NewClient {
    NewClient {
        client_id: client_id.to_owned(),
        name: Some("Command-line login (keyward login, Julia Pkg)".into()),
        public: true,
        redirect_uris: LOOPBACK_REDIRECT_URIS.map(String::from).to_vec(),
        grant_types: vec![
            keyward_proto::token::DEVICE_CODE_GRANT.into(),
            "authorization_code".into(),
            "refresh_token".into(),
            keyward_proto::exchange::TOKEN_EXCHANGE_GRANT.into(),
        ],
        scopes: ["openid", "profile", "email", "offline_access"]
            .map(String::from)
            .to_vec(),
        ..NewClient::default()
    }
}

async fn config_user(declared: &UserConfig) -> Result<User, AdminError> {
    let password_hash = match (&declared.password, &declared.password_hash) {
        (Some(plain), _) => password::hash(plain.clone()).await?,
        (None, Some(hash)) => hash.clone(),
        (None, None) => {
            return Err(AdminError::Invalid(format!(
                "user {:?} has no password",
                declared.username
            )));
        }
    };
    Ok(User {
        id: new_user_id(),
        username: declared.username.clone(),
        email_verified: declared.email.is_some(),
        email: declared.email.clone(),
        name: declared.name.clone(),
        password_hash: Some(password_hash),
        disabled: false,
        created_at: now(),
    })
}

/// How the secrets of a database or a backup (signing keys, the MAC key) are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealing {
    /// Sealed with a key file (`KEYWARD_KEY_ENCRYPTION_KEY_FILE`).
    pub sealed: usize,
    /// In clear (made before a key file was set, or with none set).
    pub clear: usize,
    /// Whether the configured key file opens every sealed one; `None` when no key file
    /// is configured.
    pub opens: Option<bool>,
}

impl Sealing {
    /// Counts the sealed secrets of `inspection` and tries `at_rest` on each.
    fn of(inspection: &Inspection, at_rest: Option<&AtRestKey>) -> Self {
        let sealed: Vec<&str> = inspection
            .secrets
            .iter()
            .map(|s| s.value.as_str())
            .filter(|v| at_rest::is_sealed(v))
            .collect();
        Self {
            sealed: sealed.len(),
            clear: inspection.secrets.len() - sealed.len(),
            opens: at_rest.map(|key| sealed.iter().all(|v| at_rest::load(Some(key), v).is_ok())),
        }
    }
}

/// What `keyward backup` wrote.
#[derive(Debug)]
pub struct BackupReport {
    /// What the backup holds.
    pub inspection: Inspection,
    /// How long the copy took (snapshot, sync and check).
    pub took: std::time::Duration,
    /// How its secrets are kept.
    pub sealing: Sealing,
}

/// Writes an online, consistent copy of the SQLite database at `database_url` to
/// `dest` ([`backup::snapshot`]), and says how the secrets in it are kept: sealed ones
/// need the key file `at_rest` was read from, which is not in the backup.
pub async fn backup(
    database_url: &str,
    dest: &std::path::Path,
    force: bool,
    at_rest: Option<&AtRestKey>,
) -> Result<BackupReport, AdminError> {
    let started = std::time::Instant::now();
    let inspection = backup::snapshot(database_url, dest, force).await?;
    let took = started.elapsed();
    let sealing = Sealing::of(&inspection, at_rest);
    Ok(BackupReport {
        inspection,
        took,
        sealing,
    })
}

/// Puts the backup `file` in place of the SQLite database at `database_url`, once it
/// has passed every check ([`backup::stage_restore`]) and its sealed secrets open with
/// `at_rest` (a server could not start on them otherwise); refused while anything has
/// the database open. The database replaced is kept beside it.
pub async fn restore(
    database_url: &str,
    file: &std::path::Path,
    at_rest: Option<&AtRestKey>,
) -> Result<Restored, AdminError> {
    let staged = backup::stage_restore(database_url, file).await?;
    for secret in &staged.inspection().secrets {
        if let Err(source) = at_rest::load(at_rest, &secret.value) {
            return Err(AdminError::Sealed {
                what: secret.name.clone(),
                file: file.display().to_string(),
                source,
            });
        }
    }
    Ok(staged.commit().await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(clients: &[&str], users: &[&str]) -> Config {
        let mut text = String::from("issuer = \"https://id.example\"\n");
        for id in clients {
            text.push_str(&format!(
                "[[clients]]\nclient_id = \"{id}\"\nclient_secret = \"secret-of-{id}-0123456789abcdef\"\n\
                 grant_types = [\"client_credentials\"]\nscopes = [\"api\"]\n"
            ));
        }
        for name in users {
            text.push_str(&format!(
                "[[users]]\nusername = \"{name}\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\"\n"
            ));
        }
        Config::from_toml(&text, &BTreeMap::new()).unwrap()
    }

    /// The file is the truth for what it declares: taken out of it, a client is
    /// deleted and a user disabled, at the next sync (a start or a reload); what the
    /// admin commands added is never touched; a first sync after an upgrade (nothing
    /// recorded) takes nothing out.
    #[tokio::test]
    async fn what_the_file_no_longer_declares_is_taken_out_of_service() {
        let (store, dir) = crate::store::contract::sqlite_store().await;
        let store = store.as_ref();
        let first = sync_config(store, &config(&["a", "b"], &["ann", "bea"]))
            .await
            .unwrap();
        assert_eq!((first.clients, first.users), (2, 2));
        assert!(first.removed_clients.is_empty() && first.disabled_users.is_empty());
        let cli = NewClient {
            client_id: "by-hand".into(),
            grant_types: vec!["client_credentials".into()],
            ..NewClient::default()
        };
        add_client(store, cli).await.unwrap();

        let second = sync_config(store, &config(&["a"], &["ann"])).await.unwrap();
        assert_eq!(second.removed_clients, ["b"]);
        assert_eq!(second.disabled_users, ["bea"]);
        assert!(store.get_client("b").await.unwrap().is_none());
        assert!(store.get_client("a").await.unwrap().is_some());
        assert!(store.get_client("by-hand").await.unwrap().is_some());
        let bea = store.get_user_by_username("bea").await.unwrap().unwrap();
        assert!(bea.disabled);
        assert!(
            !store
                .get_user_by_username("ann")
                .await
                .unwrap()
                .unwrap()
                .disabled
        );

        // Nothing more to take out; a user back in the file stays disabled until
        // `keyward user enable` (the file cannot tell a removal from a disabling).
        let third = sync_config(store, &config(&["a"], &["ann", "bea"]))
            .await
            .unwrap();
        assert_eq!(
            third,
            Synced {
                clients: 1,
                users: 2,
                ..Synced::default()
            }
        );
        assert!(
            store
                .get_user_by_username("bea")
                .await
                .unwrap()
                .unwrap()
                .disabled
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
