//! Scopes (RFC 6749 §3.3): a space-delimited list of case-sensitive tokens, parsed once
//! into an ordered set.

use std::collections::BTreeSet;

/// A set of scope tokens, kept sorted so that its string form is canonical.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<String>);

/// A scope string that breaks RFC 6749 §3.3's grammar.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("scope token {0:?} has a character outside RFC 6749 §3.3's set")]
pub struct InvalidScope(pub String);

impl ScopeSet {
    /// Parses `scope-token *( SP scope-token )`; runs of spaces are tolerated.
    pub fn parse(value: &str) -> Result<Self, InvalidScope> {
        let mut set = BTreeSet::new();
        for token in value.split(' ').filter(|t| !t.is_empty()) {
            // %x21 / %x23-5B / %x5D-7E
            let valid = token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !valid {
                return Err(InvalidScope(token.chars().take(64).collect()));
            }
            set.insert(token.to_owned());
        }
        Ok(Self(set))
    }

    /// Builds a set from tokens already known to be valid.
    pub fn from_tokens<I: IntoIterator<Item = S>, S: Into<String>>(tokens: I) -> Self {
        Self(tokens.into_iter().map(Into::into).collect())
    }

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    /// Whether every scope of `self` is in `other`.
    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The scopes of `self` that are also in `other`.
    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    /// The scopes in `self` or in `other`.
    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.union(&other.0).cloned().collect())
    }

    /// The scopes of `self` not in `other`.
    pub fn difference(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.difference(&other.0).cloned().collect())
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates the scopes in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Removes a scope.
    pub fn remove(&mut self, scope: &str) -> bool {
        self.0.remove(scope)
    }
}

impl std::fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(scope)?;
            first = false;
        }
        Ok(())
    }
}

impl serde::Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ScopeSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::parse(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_canonicalises() {
        let set = ScopeSet::parse("openid  profile openid email").unwrap();
        assert_eq!(set.to_string(), "email openid profile");
        assert!(set.contains("openid"));
    }

    #[test]
    fn rejects_quotes_and_backslashes() {
        assert!(ScopeSet::parse("openid \"x").is_err());
        assert!(ScopeSet::parse("a\\b").is_err());
        assert!(ScopeSet::parse("é").is_err());
    }

    #[test]
    fn set_operations() {
        let a = ScopeSet::parse("a b c").unwrap();
        let b = ScopeSet::parse("b c d").unwrap();
        assert_eq!(a.intersection(&b).to_string(), "b c");
        assert_eq!(a.difference(&b).to_string(), "a");
        assert!(ScopeSet::parse("b").unwrap().is_subset(&a));
    }
}
