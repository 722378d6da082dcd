//! Who may hold which scopes in a token exchange: the subject names of an account, a
//! client or a machine, and the `[[policies]]` that give them scopes (Taskcluster's
//! grammar: a scope ending in `*` holds every scope with that prefix; see
//! [`keyward_proto::exchange::satisfies`]).
//!
//! A person's subject names are `user:<username>`, `group:<connector>:<group>` for each
//! group their linked identities currently report, and `connector:<id>` for each way
//! they sign in (each linked identity, and the password connector when they have a
//! password). A client's is `client:<id>`; a client also holds the scopes it is
//! registered with.

use keyward_proto::ScopeSet;
use keyward_proto::exchange::satisfies;

use crate::config::exchange::Policy;
use crate::domain::User;
use crate::store::{Store, StoreError};

/// One scope a subject holds, and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The scope (perhaps ending in `*`).
    pub scope: String,
    /// What gave it: `policies[N]` or `client registration`.
    pub source: String,
    /// The subject name it was given to.
    pub subject: String,
}

/// The subject names of `user` (see the module docs), as of `now`.
pub async fn user_subjects(
    store: &dyn Store,
    user: &User,
    password_connector: Option<&str>,
    now: i64,
    groups_max_age: std::time::Duration,
) -> Result<Vec<String>, StoreError> {
    let mut subjects = vec![format!("user:{}", user.username)];
    for group in crate::accounts::groups_of(store, &user.id, now, groups_max_age).await? {
        subjects.push(format!("group:{group}"));
    }
    let mut connectors: Vec<String> = store
        .list_identities(&user.id)
        .await?
        .into_iter()
        .map(|identity| identity.connector_id)
        .collect();
    if let Some(password) = password_connector
        && user.password_hash.is_some()
    {
        connectors.push(password.to_owned());
    }
    connectors.sort();
    connectors.dedup();
    subjects.extend(connectors.into_iter().map(|c| format!("connector:{c}")));
    Ok(subjects)
}

/// The subject name of a client.
pub fn client_subject(client_id: &str) -> String {
    format!("client:{client_id}")
}

/// Every scope `subjects` hold under `policies`, each with the policy that gave it, in
/// the order of the policies.
pub fn held_scopes(policies: &[Policy], subjects: &[String]) -> Vec<Held> {
    let mut held = Vec::new();
    for (i, policy) in policies.iter().enumerate() {
        let Some(subject) = policy.subjects.iter().find(|s| subjects.contains(s)) else {
            continue;
        };
        for scope in &policy.scopes {
            held.push(Held {
                scope: scope.clone(),
                source: format!("policies[{i}]"),
                subject: subject.clone(),
            });
        }
    }
    held
}

/// The scopes of `requested` that `held` satisfies.
pub fn grantable(held: &[Held], requested: &ScopeSet) -> ScopeSet {
    ScopeSet::from_tokens(
        requested
            .iter()
            .filter(|wanted| held.iter().any(|h| satisfies(&h.scope, wanted))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(subjects: &[&str], scopes: &[&str]) -> Policy {
        Policy {
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn policies_give_scopes_to_any_of_their_subjects() {
        let policies = [
            policy(
                &["group:corp:sre", "user:alice"],
                &["queue:create-task:proj-infra/*", "secrets:get:infra/*"],
            ),
            policy(&["client:ci"], &["queue:create-task:proj-ci/*"]),
            policy(&["connector:github"], &["hooks:read"]),
        ];
        let bob = ["user:bob".to_owned(), "group:corp:sre".to_owned()];
        let held = held_scopes(&policies, &bob);
        assert_eq!(
            held.iter().map(|h| h.scope.as_str()).collect::<Vec<_>>(),
            ["queue:create-task:proj-infra/*", "secrets:get:infra/*"]
        );
        assert_eq!(held[0].source, "policies[0]");
        assert_eq!(held[0].subject, "group:corp:sre");
        assert!(held_scopes(&policies, &["user:carol".to_owned()]).is_empty());

        let wanted = ScopeSet::parse(
            "queue:create-task:proj-infra/build secrets:get:prod/db queue:create-task:proj-infra/*",
        )
        .unwrap();
        assert_eq!(
            grantable(&held, &wanted).to_string(),
            "queue:create-task:proj-infra/* queue:create-task:proj-infra/build"
        );
        assert!(grantable(&held, &ScopeSet::default()).is_empty());
    }
}
