//! Accounts and their linked identities: which account an upstream identity signs in
//! to. This is the metacpan model with its gaps closed:
//!
//! 1. An identity someone already holds signs in to that account (or, when linking,
//!    must already be the linking account's).
//! 2. A new identity is linked to an existing account only by that account's explicit
//!    "link" action on the account page ([`Intent::Link`]). An ordinary sign-in never
//!    links, whoever else is signed in in the browser: two people on one browser must
//!    not merge their accounts by signing in one after the other.
//! 3. A new identity whose provider vouches for its address (`email_verified`) is linked
//!    to the one account with that verified address, but only when the connector is
//!    configured with `trust_email = true`: addresses are never matched otherwise.
//! 4. Anything else creates an account, unless the connector has
//!    `create_accounts = false`. The new account's address counts as verified only
//!    when the connector vouches for addresses
//!    ([`ConnectorConfig::vouches_for_email`]); otherwise a provider claiming
//!    `email_verified` for someone else's address would make that claim keyward's
//!    own, in ID tokens and in the matching of rule 3.
//!
//! The account id is the `sub` every client sees, whichever identity was used.

use crate::admin::new_user_id;
use crate::config::ConnectorConfig;
use crate::domain::{Identity, User, validate_username};
use crate::store::{IdentityKey, Store, StoreError};
use crate::upstream::UpstreamIdentity;

/// Why an identity could not sign in or be linked.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The account is disabled.
    #[error("the account is disabled")]
    Disabled,
    /// Linking: another account already holds this identity.
    #[error("this identity is linked to another account")]
    HeldByAnother,
    /// Nobody holds the identity and the connector does not create accounts.
    #[error("no account is linked to this identity")]
    NoAccount,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the sign-in is for.
#[derive(Clone, Copy, Debug)]
pub enum Intent<'a> {
    /// Signing in: to the account holding the identity, the one with its trusted
    /// verified address, or a new one. Never to whoever is signed in already.
    SignIn,
    /// Linking another identity to this account (the account page's "link" action).
    Link(&'a User),
}

/// How the identity and the account came together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The identity was already linked to the account.
    Existing,
    /// The identity was linked to the account now.
    Linked,
    /// A new account was created for the identity.
    Created,
}

/// Finds (or links, or creates) the account `upstream` signs in to through `connector`.
/// A new account never takes a name in `reserved` (the usernames the configuration
/// gives powers to: `admins`, and `user:` subjects of the `[[policies]]`), so that
/// nobody can sign in first under an administrator's name and be taken for them.
pub async fn resolve(
    store: &dyn Store,
    connector: &ConnectorConfig,
    upstream: &UpstreamIdentity,
    intent: Intent<'_>,
    reserved: &[String],
    now: i64,
) -> Result<(User, Outcome), AccountError> {
    let record = |user_id: &str, created_at: i64| Identity {
        connector_id: connector.id.clone(),
        subject: upstream.subject.clone(),
        user_id: user_id.to_owned(),
        email: upstream.email.clone(),
        email_verified: upstream.email_verified && upstream.email.is_some(),
        name: upstream.name.clone(),
        username: upstream.username.clone(),
        groups: upstream.groups.clone(),
        created_at,
        last_login_at: now,
        groups_confirmed_at: now,
    };

    // Two attempts: a concurrent sign-in may link or create the identity between our
    // look-up and our insert; the second look-up then finds it.
    for _ in 0..2 {
        if let Some(held) = store
            .get_identity(IdentityKey {
                connector_id: &connector.id,
                subject: &upstream.subject,
            })
            .await?
        {
            if let Intent::Link(user) = intent
                && user.id != held.user_id
            {
                return Err(AccountError::HeldByAnother);
            }
            let user = enabled(store.get_user(&held.user_id).await?)?;
            store
                .update_identity(&record(&held.user_id, held.created_at))
                .await?;
            return Ok((user, Outcome::Existing));
        }

        let target = match intent {
            Intent::Link(user) => Some(user.clone()),
            Intent::SignIn => trusted_email_owner(store, connector, upstream).await?,
        };
        if let Some(user) = target {
            let user = enabled(Some(user))?;
            match store.insert_identity(&record(&user.id, now)).await {
                Ok(()) => {
                    tracing::info!(user_id = %user.id, connector = %connector.id, "identity linked");
                    return Ok((user, Outcome::Linked));
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }

        if !connector.create_accounts {
            return Err(AccountError::NoAccount);
        }
        match create_account(
            store,
            connector,
            upstream,
            reserved,
            |id| record(id, now),
            now,
        )
        .await
        {
            Ok(user) => {
                tracing::info!(user_id = %user.id, connector = %connector.id, "account created");
                return Ok((user, Outcome::Created));
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AccountError::Store(StoreError::Conflict(
        "identity (changed twice while signing in)".into(),
    )))
}

/// The groups an account's identities carry, as the `groups` scope releases them:
/// each prefixed with the id of the connector that said so (`github:acme`,
/// `corp:sre`), so that one provider's group never passes for another's (a GitHub
/// organisation named `sre` is `github:sre`, not the corporate `corp:sre`); only those
/// confirmed by a sign-in through their identity within `max_age` of `now` (older
/// ones may be stale: the person may have left the group since); sorted, each once.
pub async fn groups_of(
    store: &dyn Store,
    user_id: &str,
    now: i64,
    max_age: std::time::Duration,
) -> Result<Vec<String>, StoreError> {
    let oldest = now.saturating_sub(crate::domain::secs(max_age));
    let mut groups: Vec<String> = store
        .list_identities(user_id)
        .await?
        .into_iter()
        .filter(|i| i.groups_confirmed_at >= oldest)
        .flat_map(|i| {
            let connector = i.connector_id;
            i.groups
                .into_iter()
                .map(move |group| format!("{connector}:{group}"))
        })
        .collect();
    groups.sort();
    groups.dedup();
    Ok(groups)
}

fn enabled(user: Option<User>) -> Result<User, AccountError> {
    match user {
        Some(user) if !user.disabled => Ok(user),
        Some(_) => Err(AccountError::Disabled),
        // An identity whose account is gone: treat as disabled rather than recreate.
        None => Err(AccountError::Disabled),
    }
}

/// The one account whose verified address is the identity's, when the connector trusts
/// the provider's verification.
async fn trusted_email_owner(
    store: &dyn Store,
    connector: &ConnectorConfig,
    upstream: &UpstreamIdentity,
) -> Result<Option<User>, AccountError> {
    let Some(email) = upstream
        .email
        .as_deref()
        .filter(|_| connector.trust_email && upstream.email_verified)
    else {
        return Ok(None);
    };
    let mut owners = store.find_users_by_verified_email(email).await?;
    // Two accounts with one address: matching would be a guess; create a new one.
    Ok(if owners.len() == 1 {
        owners.pop()
    } else {
        None
    })
}

/// Creates an account for `upstream`, with a username derived from its login name or
/// address and made unique. Its address is verified only when `connector` vouches for
/// addresses.
async fn create_account(
    store: &dyn Store,
    connector: &ConnectorConfig,
    upstream: &UpstreamIdentity,
    reserved: &[String],
    identity_for: impl Fn(&str) -> Identity,
    now: i64,
) -> Result<User, StoreError> {
    let base = username_base(upstream);
    let mut last_conflict = None;
    for attempt in 0..12 {
        let username = match attempt {
            0 => base.clone(),
            1..=8 => format!("{base}-{}", attempt + 1),
            _ => format!(
                "{base}-{}",
                keyward_proto::secret::random_urlsafe(4)
                    .to_lowercase()
                    .replace(['-', '_'], "x")
            ),
        };
        let user = User {
            id: new_user_id(),
            username,
            email: upstream.email.clone(),
            email_verified: connector.vouches_for_email()
                && upstream.email_verified
                && upstream.email.is_some(),
            name: upstream.name.clone(),
            password_hash: None,
            disabled: false,
            created_at: now,
        };
        if is_reserved(reserved, &user.username) {
            continue;
        }
        match store
            .insert_user_with_identity(&user, &identity_for(&user.id))
            .await
        {
            Ok(()) => return Ok(user),
            Err(StoreError::Conflict(what)) if what.starts_with("user") => {
                last_conflict = Some(what);
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(
        last_conflict.unwrap_or_else(|| "user".into()),
    ))
}

/// Whether `username` is one of `reserved`, letter case aside.
pub fn is_reserved(reserved: &[String], username: &str) -> bool {
    let username = username.to_lowercase();
    reserved.iter().any(|r| r.to_lowercase() == username)
}

/// A username from the provider's login name, else the address's local part, else
/// `user`: lower-case, only characters usernames allow, at most 48 of them.
fn username_base(upstream: &UpstreamIdentity) -> String {
    let raw = upstream
        .username
        .clone()
        .or_else(|| {
            upstream
                .email
                .as_deref()
                .and_then(|e| e.split('@').next())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let cleaned: String = raw
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || "._-".contains(*c))
        .take(48)
        .collect();
    let cleaned = cleaned.trim_matches(['.', '-', '_']).to_owned();
    if cleaned.is_empty() || validate_username(&cleaned).is_err() {
        "user".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(username: Option<&str>, email: Option<&str>) -> UpstreamIdentity {
        UpstreamIdentity {
            subject: "1".into(),
            username: username.map(str::to_owned),
            email: email.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn usernames_come_from_the_login_or_the_address() {
        assert_eq!(username_base(&identity(Some("OctoCat"), None)), "octocat");
        assert_eq!(
            username_base(&identity(None, Some("Ada.Lovelace@example.com"))),
            "ada.lovelace"
        );
        assert_eq!(username_base(&identity(Some("  <script>"), None)), "script");
        assert_eq!(username_base(&identity(Some("__"), None)), "user");
        assert_eq!(username_base(&identity(None, None)), "user");
        assert_eq!(
            username_base(&identity(Some(&"x".repeat(100)), None)).len(),
            48
        );
    }
}
