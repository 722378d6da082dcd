//! What an authenticated administrator does, through the JSON admin API
//! (`/admin/api/`) or the admin console (`/admin`): each change is checked first (the
//! record exists, the id is free, the values are valid, the client is not one the
//! configuration file or `[pkg_auth]` declares), then written to the audit log (who,
//! what, to which record, when, from where), then carried out. So the log holds what
//! was done, not what was refused, and nothing is done that it does not show; only a
//! store failing between the entry and the change leaves an entry for a change that
//! did not happen.
//!
//! Who counts as an administrator is decided above, by the caller's front door: a
//! client's own token for the API, a person's fresh sign-in for the console.

use std::time::Duration;

use keyward_proto::ClientSecret;

use crate::admin::{self, AdminError, ClientChanges, NewClient};
use crate::domain::{AuditEntry, Client, PasswordLink, StoredKey, User};
use crate::policy;
use crate::state::AppState;
use crate::store::StoreError;

/// The scope that makes an administrator: of a client, registered with it (the admin
/// API); of a person, given by the `[[policies]]` (the admin console).
pub const ADMIN_SCOPE: &str = "keyward:admin";

/// Whether `user` is an administrator: an enabled account listed in `admins`, or one
/// whose subject names the `[[policies]]` give [`ADMIN_SCOPE`] by name (a wildcard
/// such as `keyward:*`, written for token exchange, does not open the console). Asked
/// at every request, so taking it away ends it at once.
pub async fn is_admin(state: &AppState, user: &User) -> Result<bool, StoreError> {
    if user.disabled {
        return Ok(false);
    }
    let config = state.config();
    if config.admins.contains(&user.username) {
        return Ok(true);
    }
    if config.exchange.policies.is_empty() {
        return Ok(false);
    }
    let connectors = state.connectors();
    let password = connectors.password_login().map(|c| c.id.as_str());
    let subjects = policy::user_subjects(
        state.store(),
        user,
        password,
        state.now(),
        config.groups_max_age,
    )
    .await?;
    let held = policy::held_scopes(&config.exchange.policies, &subjects);
    Ok(held.iter().any(|h| h.scope == ADMIN_SCOPE))
}

/// Who is acting, as the audit log names them: `client:<id>` for an admin client,
/// `user:<username>` for a person in the console; and from which address.
#[derive(Clone, Debug)]
pub struct Actor {
    /// The audit log's `actor`.
    pub name: String,
    /// The caller's address, when known.
    pub address: Option<String>,
}

/// The administrative operations of one [`Actor`] on one server.
pub struct Operator<'a> {
    state: &'a AppState,
    actor: &'a Actor,
}

/// How long a set-password link works: a day.
pub const PASSWORD_LINK_TTL: Duration = Duration::from_secs(86_400);

/// A set-password link just made: to hand to its person, shown once.
pub struct MadePasswordLink {
    /// The account.
    pub user: User,
    /// The link (`{issuer}/password/set?token=…`).
    pub url: String,
    /// When it stops working.
    pub expires_at: i64,
}

/// The grace period of a rotated secret when none is named: a day.
pub const DEFAULT_SECRET_GRACE: Duration = Duration::from_secs(86_400);

impl<'a> Operator<'a> {
    /// `actor`'s operations on `state`.
    pub fn new(state: &'a AppState, actor: &'a Actor) -> Self {
        Self { state, actor }
    }

    /// Writes `action` on `target` to the audit log; the action may go ahead only when
    /// this succeeded.
    async fn record(&self, action: &str, target: &str) -> Result<(), AdminError> {
        let entry = AuditEntry::new(
            self.actor.name.clone(),
            action,
            target,
            self.actor.address.clone(),
            self.state.now(),
        );
        self.state.store().append_audit(&entry).await?;
        tracing::info!(
            actor = %entry.actor,
            action = %entry.action,
            target = %entry.target,
            "admin action"
        );
        Ok(())
    }

    /// The user named `username`. One that cannot exist (not a valid username) is
    /// simply not found, and never reaches the database.
    pub async fn find_user(&self, username: &str) -> Result<User, AdminError> {
        let not_found = || AdminError::NotFound(format!("user {username:?}"));
        crate::domain::validate_username(username).map_err(|_| not_found())?;
        self.state
            .store()
            .get_user_by_username(username)
            .await?
            .ok_or_else(not_found)
    }

    /// The client `client_id`, likewise.
    pub async fn find_client(&self, client_id: &str) -> Result<Client, AdminError> {
        crate::domain::validate_client_id(client_id)
            .map_err(|_| AdminError::NotFound("client".into()))?;
        self.state
            .store()
            .get_client(client_id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("client {client_id:?}")))
    }

    /// Refuses a client that is not to be changed here: one the configuration file
    /// declares (a start or reload would put it back), or the command-line client
    /// `[pkg_auth]` registers (`keyward login` and the Julia client depend on it).
    pub async fn changeable(&self, client_id: &str) -> Result<(), AdminError> {
        let pkg = &self.state.config().pkg_auth;
        if pkg.enabled && pkg.client_id == client_id {
            return Err(AdminError::Declared(format!(
                "client {client_id:?} (registered by [pkg_auth])"
            )));
        }
        admin::not_declared(self.state.store(), client_id).await
    }

    /// Disables (ending sessions, revoking grants) or enables a user.
    pub async fn set_disabled(&self, username: &str, disabled: bool) -> Result<User, AdminError> {
        self.find_user(username).await?;
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        self.record(action, username).await?;
        admin::set_disabled(self.state.store(), username, disabled).await
    }

    /// Ends every session of a user and revokes every grant; the account stays enabled.
    pub async fn revoke_user(&self, username: &str) -> Result<User, AdminError> {
        self.find_user(username).await?;
        self.record("user.revoke", username).await?;
        admin::revoke_user_access(self.state.store(), username).await
    }

    /// Ends one of a user's sessions, named by the hash of its id (64 hex digits).
    pub async fn end_session(&self, username: &str, session: &str) -> Result<User, AdminError> {
        let user = self.find_user(username).await?;
        let valid = session.len() == 64 && session.bytes().all(|b| b.is_ascii_hexdigit());
        let not_found = || AdminError::NotFound("session".into());
        if !valid {
            return Err(not_found());
        }
        let hash = keyward_proto::TokenHash::from_stored(session.to_ascii_lowercase());
        let live = self
            .state
            .store()
            .list_user_sessions(&user.id, self.state.now())
            .await?;
        if !live.iter().any(|s| s.id_hash == hash) {
            return Err(not_found());
        }
        // The record names the session by the start of its id's hash, as the console
        // shows it.
        self.record(
            "session.end",
            &format!("{username} session {}", &session[..8]),
        )
        .await?;
        if self
            .state
            .store()
            .delete_user_session(&user.id, &hash)
            .await?
        {
            Ok(user)
        } else {
            Err(not_found())
        }
    }

    /// A one-time link that lets the account's person choose a new password (the
    /// administrator never types one), for [`PASSWORD_LINK_TTL`]; it replaces the
    /// account's earlier link. Using it ends the account's sessions.
    pub async fn password_link(&self, username: &str) -> Result<MadePasswordLink, AdminError> {
        let user = self.find_user(username).await?;
        if user.disabled {
            return Err(AdminError::Invalid(format!(
                "user {username:?} is disabled: enable the account first"
            )));
        }
        if self.state.connectors().password_login().is_none() {
            return Err(AdminError::Invalid(
                "the password connector is turned off: a password would not sign anyone in".into(),
            ));
        }
        self.record("user.password-link", username).await?;
        let token = keyward_proto::OpaqueToken::generate();
        let now = self.state.now();
        let link = PasswordLink {
            token_hash: token.hash(),
            user_id: user.id.clone(),
            created_at: now,
            expires_at: now
                .saturating_add(PASSWORD_LINK_TTL.as_secs().try_into().unwrap_or(i64::MAX)),
        };
        self.state.store().insert_password_link(&link).await?;
        let url = self
            .state
            .config()
            .endpoint(&format!("/password/set?token={}", token.secret()));
        Ok(MadePasswordLink {
            user,
            url,
            expires_at: link.expires_at,
        })
    }

    /// Registers a client; returns its secret, to be shown this once.
    pub async fn create_client(
        &self,
        new: NewClient,
    ) -> Result<(Client, Option<ClientSecret>), AdminError> {
        let (client, secret) = new.build()?;
        if self
            .state
            .store()
            .get_client(&client.client_id)
            .await?
            .is_some()
        {
            let taken = StoreError::Conflict(format!("client {:?}", client.client_id));
            return Err(AdminError::Store(taken));
        }
        self.record("client.create", &client.client_id).await?;
        self.state.store().insert_client(&client).await?;
        Ok((client, secret))
    }

    /// Changes what a client is given; its secret stays.
    pub async fn update_client(
        &self,
        client_id: &str,
        changes: ClientChanges,
    ) -> Result<Client, AdminError> {
        self.find_client(client_id).await?;
        self.changeable(client_id).await?;
        let client = admin::changed_client(self.state.store(), client_id, changes).await?;
        self.record("client.update", client_id).await?;
        admin::store_change(self.state.store(), &client).await?;
        Ok(client)
    }

    /// Removes a client and everything issued to it. Other servers on the same database
    /// stop honouring it within half a second.
    pub async fn delete_client(&self, client_id: &str) -> Result<(), AdminError> {
        self.find_client(client_id).await?;
        self.changeable(client_id).await?;
        self.record("client.delete", client_id).await?;
        if self.state.store().delete_client(client_id).await? {
            Ok(())
        } else {
            Err(AdminError::NotFound(format!("client {client_id:?}")))
        }
    }

    /// Gives a confidential client a new secret, returned to be shown once; the old
    /// one (and the tokens issued under it) stays valid for `grace`.
    pub async fn rotate_secret(
        &self,
        client_id: &str,
        grace: Duration,
    ) -> Result<(Client, ClientSecret), AdminError> {
        if grace > admin::MAX_SECRET_GRACE {
            return Err(AdminError::Invalid(format!(
                "the grace period is at most {} seconds",
                admin::MAX_SECRET_GRACE.as_secs()
            )));
        }
        let client = self.find_client(client_id).await?;
        if client.is_public() {
            return Err(AdminError::Invalid(format!(
                "client {client_id:?} is public: it has no secret"
            )));
        }
        self.changeable(client_id).await?;
        self.record("client.rotate-secret", client_id).await?;
        admin::rotate_client_secret(self.state.store(), client_id, grace, self.state.now()).await
    }

    /// A new signing key per algorithm; the old ones are retired and stay published
    /// until the tokens they signed have expired. Returns every key, newest first.
    pub async fn rotate_keys(&self) -> Result<Vec<StoredKey>, AdminError> {
        self.record("keys.rotate", "signing-keys").await?;
        admin::rotate_keys(self.state.store(), self.state.config().at_rest_key.clone()).await?;
        Ok(self.state.store().list_keys().await?)
    }
}
