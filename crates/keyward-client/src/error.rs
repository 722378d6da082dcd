//! What can go wrong talking to a server or keeping its token. Messages name the URL and
//! what the server said, never a token.

use crate::tokenfile::TokenFileError;

/// A client failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is not one keyward will send credentials to.
    #[error("{url}: {reason}")]
    BadServerUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The request did not get an answer (connection refused, DNS, TLS, timeout).
    #[error("cannot reach {url}")]
    Unreachable {
        /// Where the request went.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a status that means neither success nor an OAuth error.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// Where the request went.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The answer could not be understood.
    #[error("{url} sent a response that cannot be read: {reason}")]
    BadResponse {
        /// Where the request went.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Discovery found no usable OpenID provider / OAuth server metadata.
    #[error("{server} is not an OAuth server keyward can use: {reason}")]
    Discovery {
        /// The server.
        server: String,
        /// What is wrong.
        reason: String,
    },
    /// The server does not offer RFC 8628 device authorization.
    #[error(
        "{server} does not offer device authorization (RFC 8628), so a terminal cannot log in to it"
    )]
    NoDeviceFlow {
        /// The server.
        server: String,
    },
    /// The server refused a request with an OAuth error (RFC 6749 §5.2).
    #[error("{url} refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// Where the request went.
        url: String,
        /// The OAuth error code.
        error: String,
        /// The server's description, shortened and stripped of control characters.
        description: Option<String>,
    },
    /// No port could be opened on 127.0.0.1 for the browser's redirect (RFC 8252).
    #[error("cannot listen on 127.0.0.1 for the browser's redirect")]
    Listen {
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The user declined the login (RFC 8628 `access_denied`).
    #[error("the login was denied")]
    AccessDenied,
    /// The device code expired before the user approved (RFC 8628 `expired_token`, or
    /// `expires_in` passed), or the browser did not come back in time.
    #[error("the login expired before it was approved; run the login again")]
    Expired,
    /// There is no usable token and logging in was not asked for.
    #[error("not logged in to {server}")]
    LoginRequired {
        /// The server.
        server: String,
    },
    /// Another writer kept changing the token file while this one wrote it.
    #[error("the token file {path} kept changing while it was written ({attempts} attempts)")]
    WriteConflict {
        /// The file.
        path: String,
        /// How many writes were tried.
        attempts: u32,
    },
    /// Reading, writing or locking the token file failed.
    #[error(transparent)]
    TokenFile(#[from] TokenFileError),
}

impl ClientError {
    /// Whether retrying later could help: the server was unreachable or failed
    /// (5xx, 429), as opposed to refusing.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Text from a server, made safe to show: at most 200 characters, no control
/// characters (a hostile server cannot rewrite the terminal).
pub(crate) fn sanitize(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_is_shortened_and_stripped() {
        assert_eq!(sanitize("a\u{1b}[2Jb\nc"), "a[2Jbc");
        assert_eq!(sanitize(&"x".repeat(1000)).len(), 200);
        let e = ClientError::Refused {
            url: "https://kw.example/token".into(),
            error: "invalid_grant".into(),
            description: Some("expired".into()),
        };
        assert_eq!(
            e.to_string(),
            "https://kw.example/token refused: invalid_grant (expired)"
        );
        assert!(!e.is_transient());
        let e = ClientError::Status {
            url: "u".into(),
            status: 503,
        };
        assert!(e.is_transient());
    }
}
