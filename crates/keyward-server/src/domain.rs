//! The records keyward keeps (clients, users, logins in progress, sessions, grants,
//! codes, refresh tokens, signing keys) and the validation rules for their fields.
//!
//! Times are seconds since the Unix epoch. Secrets are never stored: only their
//! SHA-256 ([`TokenHash`]) or, for passwords, an Argon2id PHC string.

use keyward_proto::{ScopeSet, TokenHash};
use url::Url;

/// A JWS algorithm keyward signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
pub enum SigningAlg {
    /// ECDSA P-256 SHA-256: the default.
    ES256,
    /// RSASSA-PKCS1-v1_5 SHA-256: OpenID Connect's mandatory algorithm.
    RS256,
}

impl SigningAlg {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }

    /// Parses a JOSE name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            _ => None,
        }
    }

    /// Every algorithm keyward keeps a key for.
    pub const ALL: [SigningAlg; 2] = [SigningAlg::ES256, SigningAlg::RS256];
}

/// A duration in whole seconds, as stored times count them (saturating: a duration
/// too long for `i64` is `i64::MAX`).
pub fn secs(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(secs)
        .unwrap_or(0)
}

/// Formats seconds since the epoch as `YYYY-MM-DD HH:MM:SSZ` (UTC), for pages and the
/// command line.
pub fn utc_text(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A registered OAuth client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// The client id.
    pub client_id: String,
    /// Display name.
    pub name: String,
    /// SHA-256 of the secret; `None` for a public client.
    pub secret_hash: Option<TokenHash>,
    /// The secret before the last rotation, still accepted for a grace period.
    pub previous_secret: Option<PreviousSecret>,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Allowed `post_logout_redirect_uri` values.
    pub post_logout_redirect_uris: Vec<String>,
    /// Allowed grant types, by wire name.
    pub grant_types: Vec<String>,
    /// Scopes the client may obtain.
    pub scopes: ScopeSet,
    /// A first-party client: no consent page.
    pub skip_consent: bool,
    /// A resource server: may introspect any token (others only their own).
    pub introspect: bool,
    /// Algorithm of its ID tokens.
    pub id_token_alg: SigningAlg,
    /// When it was registered.
    pub created_at: i64,
}

/// A client's secret before its last rotation, accepted until `until` so that the
/// client can move to the new one without an outage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousSecret {
    /// SHA-256 of the old secret.
    pub hash: TokenHash,
    /// Accepted before this time (seconds since the epoch).
    pub until: i64,
}

impl Client {
    /// Whether the client has no secret.
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }

    /// Whether `secret` is this client's secret at `now`: the current one, or the one
    /// before the last rotation within its grace period. Constant time per hash.
    pub fn secret_matches(&self, secret: &str, now: i64) -> bool {
        let current = self.secret_hash.as_ref().is_some_and(|h| h.matches(secret));
        let previous = self
            .previous_secret
            .as_ref()
            .is_some_and(|p| now < p.until && p.hash.matches(secret));
        current | previous
    }

    /// Whether a person must answer the consent page for `requested`, having approved
    /// `approved` before: always with `prompt=consent` (device logins set it); never
    /// for a first-party client (`skip_consent`); otherwise unless they approved all
    /// of it before, which only counts for a confidential client. A public client
    /// cannot prove who it is: any program can start a login under its id with a
    /// redirect to a port of its own on 127.0.0.1 (RFC 8252 §8.6), and must not get
    /// a code without the person saying yes each time.
    pub fn needs_consent(
        &self,
        prompt_consent: bool,
        approved: Option<&ScopeSet>,
        requested: &ScopeSet,
    ) -> bool {
        let remembered =
            !self.is_public() && approved.is_some_and(|approved| requested.is_subset(approved));
        prompt_consent || (!self.skip_consent && !remembered)
    }

    /// The previous secret's hash while it is still accepted at `now`.
    pub fn previous_secret_at(&self, now: i64) -> Option<&TokenHash> {
        self.previous_secret
            .as_ref()
            .filter(|p| now < p.until)
            .map(|p| &p.hash)
    }

    /// The scope a request that names none gets: everything the client may have, but
    /// `offline_access`, which is asked for explicitly.
    pub fn default_scope(&self) -> ScopeSet {
        let mut scope = self.scopes.clone();
        scope.remove("offline_access");
        scope
    }

    /// Whether the client may use `grant_type`.
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }
}

/// How a client proved itself at an endpoint that authenticates clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// With its secret.
    Secret,
    /// A public client, identified by `client_id` alone.
    Public,
}

/// A person who can log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Stable opaque id: the `sub` clients see.
    pub id: String,
    /// Unique login name.
    pub username: String,
    /// Email address.
    pub email: Option<String>,
    /// Whether the address is verified.
    pub email_verified: bool,
    /// Full name.
    pub name: Option<String>,
    /// Argon2id PHC string; `None` for an account without a local password.
    pub password_hash: Option<String>,
    /// A disabled user cannot log in and their tokens stop working.
    pub disabled: bool,
    /// When the account was created.
    pub created_at: i64,
}

/// A one-time set-password link an administrator made: the account whose password it
/// sets, by the SHA-256 of the link's token, until when. The token itself is shown
/// once, in the link, and never stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordLink {
    /// SHA-256 of the token in the link.
    pub token_hash: TokenHash,
    /// The account.
    pub user_id: String,
    /// When it was made.
    pub created_at: i64,
    /// When it stops working.
    pub expires_at: i64,
}

/// Milliseconds since the epoch by the system clock.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl AuditEntry {
    /// An entry with a fresh id for `actor` doing `action` to `target` from `address`,
    /// stamped `at_seconds` (the server's clock, which tests move) but never before the
    /// system clock's millisecond, which orders entries within a second.
    pub fn new(
        actor: String,
        action: &str,
        target: &str,
        address: Option<String>,
        at_seconds: i64,
    ) -> Self {
        Self {
            id: keyward_proto::secret::random_urlsafe(12),
            at: at_seconds.saturating_mul(1000).max(now_millis()),
            actor,
            action: action.to_owned(),
            target: target.to_owned(),
            address,
        }
    }
}

/// One administrator's action, as the audit log keeps it ([`crate::store::AuditStore`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// A random id.
    pub id: String,
    /// When, in milliseconds since the epoch.
    pub at: i64,
    /// Who: `client:<id>` for an admin client's token, `user:<username>` for a person at
    /// the console, `cli:<login>` for an admin command on the server's machine.
    pub actor: String,
    /// What, as `<record>.<verb>`: `user.disable`, `client.create`, `keys.rotate`, …
    pub action: String,
    /// To which record: a username, a client id, `signing-keys`.
    pub target: String,
    /// The caller's address, when known.
    pub address: Option<String>,
}

/// A login in progress: what a person is signing in for, waiting for them to sign in
/// and (for an application) consent. Lives in the store so any replica can finish it.
/// What only some logins have lives in their [`LoginKind`], so no field is ever blank.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// Random id, carried in the login and consent pages.
    pub id: String,
    /// What the login is for, with what only that kind of login has.
    pub kind: LoginKind,
    /// Space-separated `prompt` values.
    pub prompt: Option<String>,
    /// `max_age` in seconds.
    pub max_age: Option<i64>,
    /// `login_hint`, prefilled into the username field.
    pub login_hint: Option<String>,
    /// Hash of the browser-binding cookie of the browser that started the request.
    pub browser_hash: TokenHash,
    /// CSRF token of the login and consent forms.
    pub csrf: String,
    /// When it was created.
    pub created_at: i64,
    /// When it stops being usable.
    pub expires_at: i64,
    /// The user, once logged in.
    pub user_id: Option<String>,
    /// When the user authenticated.
    pub auth_time: Option<i64>,
}

impl AuthRequest {
    /// A new login in progress of `kind`, started in the browser whose binding cookie
    /// hashes to `browser_hash`, usable from `created_at` until `expires_at`; with a
    /// fresh id and CSRF token, nobody signed in yet, and no prompt, `max_age` or hint.
    pub fn new(kind: LoginKind, browser_hash: TokenHash, created_at: i64, expires_at: i64) -> Self {
        Self {
            id: keyward_proto::secret::random_urlsafe(24),
            kind,
            prompt: None,
            max_age: None,
            login_hint: None,
            browser_hash,
            csrf: keyward_proto::secret::random_urlsafe(24),
            created_at,
            expires_at,
            user_id: None,
            auth_time: None,
        }
    }

    /// The client the login is for (`None` for the account page).
    pub fn client_id(&self) -> Option<&str> {
        match &self.kind {
            LoginKind::Authorize(flow) => Some(&flow.client_id),
            LoginKind::Device { client_id, .. } => Some(client_id),
            LoginKind::Account | LoginKind::Admin => None,
        }
    }

    /// The scope asked for (nothing for the account page).
    pub fn scope(&self) -> ScopeSet {
        match &self.kind {
            LoginKind::Authorize(flow) => flow.scope.clone(),
            LoginKind::Device { scope, .. } => scope.clone(),
            LoginKind::Account | LoginKind::Admin => ScopeSet::default(),
        }
    }
}

/// Leaves out the CSRF token.
impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("prompt", &self.prompt)
            .field("max_age", &self.max_age)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("user_id", &self.user_id)
            .field("auth_time", &self.auth_time)
            .finish_non_exhaustive()
    }
}

/// What a login in progress ends in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginKind {
    /// An authorization request (RFC 6749 §4.1.1): a code sent to the client.
    Authorize(CodeFlow),
    /// A device authorization (RFC 8628): the device code, by hash, is approved.
    Device {
        /// The device's client.
        client_id: String,
        /// The scope the device asked for.
        scope: ScopeSet,
        /// SHA-256 of the device code to approve.
        device_code_hash: TokenHash,
    },
    /// A sign-in to keyward's own account page: no client, no consent.
    Account,
    /// A sign-in to the admin console (`/admin`), which takes a fresh one: like
    /// [`LoginKind::Account`], but it ends on the console.
    Admin,
}

impl LoginKind {
    /// Whether this is a sign-in to one of keyward's own pages (the account page or
    /// the admin console) rather than for a client.
    pub fn is_own_page(&self) -> bool {
        matches!(self, Self::Account | Self::Admin)
    }
}

/// What an authorization request (the code flow) carries to its end: where and how the
/// code goes, and what binds it to the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeFlow {
    /// The client.
    pub client_id: String,
    /// Requested scope, already narrowed to what the client may have.
    pub scope: ScopeSet,
    /// The redirect URI the response goes to.
    pub redirect_uri: String,
    /// Whether the request named `redirect_uri` (then the token request must repeat it).
    pub redirect_uri_given: bool,
    /// The client's `state`, as the bytes it sent.
    pub state: Option<ClientState>,
    /// The client's `nonce`.
    pub nonce: Option<String>,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// How the authorization response reaches the client.
    pub response_mode: ResponseMode,
}

/// A client's `state` parameter: the exact bytes the client sent (after percent-decoding),
/// which go back to it unchanged (RFC 6749 §4.1.2), even when they are not UTF-8 text.
/// Held, and stored, in the `application/x-www-form-urlencoded` encoding of those bytes,
/// which is ASCII and decodes to exactly them again.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientState {
    encoded: String,
}

impl ClientState {
    /// The state whose decoded bytes are `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            encoded: url::form_urlencoded::byte_serialize(bytes).collect(),
        }
    }

    /// A state from its stored (encoded) form, as [`Self::encoded`] wrote it; `None` if
    /// `encoded` is not such a form.
    pub fn from_encoded(encoded: &str) -> Option<Self> {
        let state = Self::from_bytes(&decode_form_bytes(encoded.as_bytes()));
        (state.encoded == encoded).then_some(state)
    }

    /// The encoded form: safe in a query string as it is, and what the store keeps.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    /// The bytes the client sent.
    pub fn bytes(&self) -> Vec<u8> {
        decode_form_bytes(self.encoded.as_bytes())
    }

    /// The state as text, when its bytes are UTF-8 without NUL: what an HTML form
    /// field or a JSON string can carry exactly (`form_post`, `web_message`).
    pub fn text(&self) -> Option<String> {
        String::from_utf8(self.bytes())
            .ok()
            .filter(|text| !text.contains('\0'))
    }

    /// How many bytes the client sent.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether the client sent `state=` with nothing after it.
    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }
}

impl std::fmt::Debug for ClientState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ClientState").field(&self.encoded).finish()
    }
}

/// Percent-decodes one `application/x-www-form-urlencoded` name or value into its
/// bytes, exactly (`+` is a space); bytes that are not UTF-8 stay as they are.
pub fn decode_form_bytes(input: &[u8]) -> Vec<u8> {
    let spaced: Vec<u8> = input
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&spaced).collect()
}

/// How the authorization response is delivered (OAuth 2.0 Multiple Response Type
/// Encoding Practices §2.1, Form Post Response Mode, Web Message Response Mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseMode {
    /// Parameters in the redirect URI's query string.
    #[default]
    Query,
    /// An auto-submitted HTML form POSTed to the redirect URI.
    FormPost,
    /// `window.opener.postMessage` to the redirect URI's origin, from a popup.
    WebMessage,
}

impl ResponseMode {
    /// The wire and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::FormPost => "form_post",
            Self::WebMessage => "web_message",
        }
    }

    /// Parses a wire or stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "query" => Some(Self::Query),
            "form_post" => Some(Self::FormPost),
            "web_message" => Some(Self::WebMessage),
            _ => None,
        }
    }
}

/// Where a device authorization stands (RFC 8628).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Waiting for the user.
    Pending,
    /// The user approved; the device may collect its tokens once.
    Approved,
    /// The user denied.
    Denied,
    /// The device collected its tokens.
    Used,
}

impl DeviceStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Used => "used",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(Self::Pending),
            "approved" => Some(Self::Approved),
            "denied" => Some(Self::Denied),
            "used" => Some(Self::Used),
            _ => None,
        }
    }
}

/// A device authorization (RFC 8628 §3.2), by the hash of its device code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCode {
    /// SHA-256 of the device code.
    pub device_code_hash: TokenHash,
    /// The normalised user code (no dash).
    pub user_code: String,
    /// The client that asked.
    pub client_id: String,
    /// The scope asked for.
    pub scope: ScopeSet,
    /// When it was issued.
    pub created_at: i64,
    /// When both codes expire.
    pub expires_at: i64,
    /// The least seconds between polls; grows on `slow_down`.
    pub interval: i64,
    /// When the device last polled.
    pub last_poll_at: Option<i64>,
    /// Where it stands.
    pub status: DeviceStatus,
    /// The grant created on approval.
    pub grant_id: Option<String>,
    /// SHA-256 of the Julia client's challenge (classic package-server flow only).
    pub challenge_hash: Option<TokenHash>,
}

impl DeviceCode {
    /// Whether this is a Julia classic-flow login (made by `/auth/challenge`). Its
    /// "device code" is the `response` that travels in the browser's URL
    /// (`/auth/response?…`), so it may be redeemed only through `/auth/claimtoken`
    /// together with the challenge, which never leaves the Julia client; never at
    /// `/token`, and its user code is never typed on `/device`.
    pub fn needs_challenge(&self) -> bool {
        self.challenge_hash.is_some()
    }
}

/// A browser session: a logged-in user, by the hash of the session cookie. Its `Debug`
/// leaves out the CSRF token.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the cookie value.
    pub id_hash: TokenHash,
    /// The user.
    pub user_id: String,
    /// When the user authenticated.
    pub auth_time: i64,
    /// When it was created.
    pub created_at: i64,
    /// When it ends.
    pub expires_at: i64,
    /// CSRF token of forms shown to this session (logout, account page).
    pub csrf: String,
    /// How the user signed in: a connector id.
    pub method: String,
    /// The browser's `User-Agent`, shortened, for the account page.
    pub user_agent: Option<String>,
    /// The address the session was started from, for the account page.
    pub ip: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id_hash", &self.id_hash)
            .field("user_id", &self.user_id)
            .field("auth_time", &self.auth_time)
            .field("expires_at", &self.expires_at)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// One authorization of a client by a user: the root of its codes, refresh tokens and
/// access tokens, revoked as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Random id (`gid` in access tokens).
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The user.
    pub user_id: String,
    /// Granted scope.
    pub scope: ScopeSet,
    /// When the user authenticated.
    pub auth_time: i64,
    /// The ID token nonce, echoed on the first token response.
    pub nonce: Option<String>,
    /// When it was created.
    pub created_at: i64,
    /// When it ends.
    pub expires_at: i64,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// An authorization code, by hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthCode {
    /// SHA-256 of the code.
    pub code_hash: TokenHash,
    /// The grant it belongs to.
    pub grant_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI it was sent to.
    pub redirect_uri: String,
    /// Whether the authorization request named the redirect URI.
    pub redirect_uri_given: bool,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// When it was created.
    pub created_at: i64,
    /// When it expires.
    pub expires_at: i64,
}

/// What happened when a code was redeemed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeRedemption {
    /// First use: the code is now spent.
    Redeemed(AuthCode),
    /// The code was already used: a replay.
    AlreadyUsed(AuthCode),
    /// No such code.
    NotFound,
}

/// A refresh token, by hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    /// SHA-256 of the token.
    pub token_hash: TokenHash,
    /// The grant it belongs to.
    pub grant_id: String,
    /// When it was issued.
    pub created_at: i64,
    /// When it expires.
    pub expires_at: i64,
    /// When it was exchanged for a new one.
    pub rotated_at: Option<i64>,
}

/// An identity at an upstream provider, linked to one account: the metacpan model
/// (provider, the provider's stable subject, provider data). An account holds any
/// number of them; each identity belongs to exactly one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The connector it came through.
    pub connector_id: String,
    /// The provider's stable id of the person (`sub`, GitHub's numeric id, the address).
    pub subject: String,
    /// The account it is linked to.
    pub user_id: String,
    /// The address the provider reported.
    pub email: Option<String>,
    /// Whether the provider says the address is verified.
    pub email_verified: bool,
    /// The name the provider reported.
    pub name: Option<String>,
    /// The login name at the provider.
    pub username: Option<String>,
    /// Groups the provider reported (GitHub organisations and teams, an OIDC `groups`
    /// claim), as of the last sign-in through this identity.
    pub groups: Vec<String>,
    /// When it was linked.
    pub created_at: i64,
    /// When it was last used to sign in.
    pub last_login_at: i64,
    /// When the provider last told keyward the groups (at a sign-in through this
    /// identity); groups older than `groups_max_age` are not released.
    pub groups_confirmed_at: i64,
}

/// What a sign-in at a provider is for, once the provider answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectorPurpose {
    /// Finishing a login in progress ([`AuthRequest`] id).
    Login(String),
    /// Linking another identity to the signed-in account (its user id).
    Link(String),
}

/// A sign-in at an upstream provider in progress: the `state` sent to the provider (or
/// the token of an emailed link), by hash, with what is needed to finish it. Single use.
/// Its `Debug` leaves out the PKCE verifier and the nonce.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectorLogin {
    /// SHA-256 of the state or emailed token.
    pub state_hash: TokenHash,
    /// The connector.
    pub connector_id: String,
    /// What it is for.
    pub purpose: ConnectorPurpose,
    /// Hash of the browser-binding cookie of the browser that started it.
    pub browser_hash: TokenHash,
    /// The OpenID Connect nonce sent to the provider.
    pub nonce: Option<String>,
    /// The PKCE verifier of the provider's code.
    pub code_verifier: Option<String>,
    /// The address an emailed link was sent to.
    pub email: Option<String>,
    /// When it started.
    pub created_at: i64,
    /// When it stops being usable.
    pub expires_at: i64,
}

impl std::fmt::Debug for ConnectorLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorLogin")
            .field("state_hash", &self.state_hash)
            .field("connector_id", &self.connector_id)
            .field("purpose", &self.purpose)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What became of a request to unlink an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unlink {
    /// The identity is no longer linked.
    Done,
    /// Refused: it is the account's last way to sign in.
    LastSignInMethod,
    /// The account holds no such identity.
    NotFound,
}

/// How a throttle slows down repeated attempts of one kind (passwords for an account,
/// user codes from an address, …): the first `free - 1` attempts pass at once; the
/// `free`-th and every later one make the next attempt wait, `first_delay` seconds and
/// then twice as long each time, up to `max_delay`. After `forget_after` seconds
/// without an attempt the count starts over. There is no hard lock-out: whoever waits
/// out the delay may try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Attempts that do not make the next one wait, plus one.
    pub free: i64,
    /// The first wait, in seconds.
    pub first_delay: i64,
    /// The longest wait, in seconds.
    pub max_delay: i64,
    /// Seconds without an attempt after which the count starts over; longer than
    /// `max_delay`.
    pub forget_after: i64,
}

impl ThrottlePolicy {
    /// The wait the `attempts`-th attempt in a row imposes on the next one, when the
    /// previous attempt imposed `previous` (0 for the first attempt). The store computes
    /// the same in SQL, in one atomic step.
    pub fn next_delay(&self, attempts: i64, previous: i64) -> i64 {
        if attempts < self.free {
            0
        } else if previous == 0 {
            self.first_delay
        } else {
            previous.saturating_mul(2).min(self.max_delay)
        }
    }
}

/// What a throttle said to an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleAttempt {
    /// Counted; go ahead.
    Allowed,
    /// Not counted: wait this many seconds (the `Retry-After` of the answer).
    Refused {
        /// Seconds until the next attempt is allowed.
        retry_after: i64,
    },
}

/// A signing key pair, kept in the store so that every replica signs with the same key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlg,
    /// The private key, base64 DER (PKCS#8 for EC, PKCS#1 for RSA).
    pub private_der: String,
    /// The public JWK, as JSON.
    pub public_jwk: String,
    /// When it was created.
    pub created_at: i64,
    /// When a newer key replaced it; it stays published for a while after.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// Checks a client id: 1 to 128 printable ASCII characters, no spaces or `:`.
pub fn validate_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(format!(
            "{id:?} must be 1 to 128 printable ASCII characters without ':'"
        ));
    }
    Ok(())
}

/// Checks a username: 1 to 64 characters of letters, digits and `._-@+`.
pub fn validate_username(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "._-@+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} must be 1 to 64 letters, digits or ._-@+"))
    }
}

/// Checks a redirect URI (RFC 6749 §3.1.2): absolute, no fragment; http only for
/// loopback hosts; custom schemes allowed for native apps (RFC 8252 §7.1).
pub fn validate_redirect_uri(uri: &str) -> Result<(), String> {
    let url = Url::parse(uri).map_err(|e| format!("{uri:?} is not an absolute URL: {e}"))?;
    if url.fragment().is_some() {
        return Err(format!("{uri:?} must not have a fragment"));
    }
    if url.scheme() == "http" && !crate::net::is_loopback_host(url.host_str()) {
        return Err(format!(
            "{uri:?}: http is only allowed for loopback addresses; use https"
        ));
    }
    if matches!(url.scheme(), "javascript" | "data" | "file" | "vbscript") {
        return Err(format!("{uri:?}: scheme {} is not allowed", url.scheme()));
    }
    Ok(())
}

/// Whether the redirect URI a request names is the `registered` one (RFC 6749 §3.1.2.3:
/// compared as strings), or, for a registered `http` URI on a loopback IP literal
/// (`http://127.0.0.1/cb`, `http://[::1]/cb`), the same URI on any port (RFC 8252 §7.3:
/// a native app listens on the port the system gives it). Only IP literals: a
/// `localhost` name may resolve elsewhere, and no other host gets this (RFC 8252 §8.3).
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(registered), Ok(requested)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    let loopback_ip = |url: &Url| match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    registered.scheme() == "http"
        && loopback_ip(&registered)
        && requested.scheme() == "http"
        && requested.host() == registered.host()
        && requested.username().is_empty()
        && requested.password().is_none()
        && requested.path() == registered.path()
        && requested.query() == registered.query()
        && requested.fragment().is_none()
        && registered.username().is_empty()
        && registered.password().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ip_redirects_match_on_any_port_and_nothing_else_does() {
        for (registered, requested) in [
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:49152/callback",
            ),
            (
                "http://127.0.0.1:5555/callback",
                "http://127.0.0.1:40001/callback",
            ),
            ("http://127.0.0.1/callback", "http://127.0.0.1/callback"),
            ("http://[::1]/cb", "http://[::1]:8123/cb"),
            (
                "http://127.0.0.1/cb?app=cli",
                "http://127.0.0.1:1/cb?app=cli",
            ),
            ("https://app.example/cb", "https://app.example/cb"),
        ] {
            assert!(
                redirect_uri_matches(registered, requested),
                "{registered} {requested}"
            );
        }
        for (registered, requested) in [
            // Names, other hosts, other schemes: exact only.
            (
                "http://localhost/callback",
                "http://localhost:49152/callback",
            ),
            ("https://app.example/cb", "https://app.example:8443/cb"),
            ("https://127.0.0.1/cb", "https://127.0.0.1:8443/cb"),
            // Everything but the port must be the same.
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.2:49152/callback",
            ),
            ("http://127.0.0.1/callback", "http://[::1]:49152/callback"),
            (
                "http://127.0.0.1/callback",
                "http://localhost:49152/callback",
            ),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:49152/callback/",
            ),
            ("http://127.0.0.1/callback", "http://127.0.0.1:49152/other"),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:49152/callback?x=1",
            ),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:49152/callback#x",
            ),
            (
                "http://127.0.0.1/callback",
                "http://user@127.0.0.1:49152/callback",
            ),
            (
                "http://127.0.0.1/callback",
                "https://127.0.0.1:49152/callback",
            ),
            ("http://127.0.0.1/callback", "not a url"),
        ] {
            assert!(
                !redirect_uri_matches(registered, requested),
                "{registered} {requested}"
            );
        }
    }

    /// Any bytes, UTF-8 or not, survive the encoded form and the store's round trip.
    #[test]
    fn client_state_keeps_its_bytes() {
        let cases: [&[u8]; 6] = [
            b"",
            b"abc",
            b"a b+c&d=e%",
            b"\xff\xfe\x00",
            b"\xc0\xaf",
            "h\u{e9}".as_bytes(),
        ];
        for bytes in cases {
            let state = ClientState::from_bytes(bytes);
            assert_eq!(state.bytes(), bytes);
            assert_eq!(state.len(), bytes.len());
            let again = ClientState::from_encoded(state.encoded()).expect("its own form");
            assert_eq!(again, state);
            assert!(state.encoded().bytes().all(|b| b.is_ascii_graphic()));
        }
        assert_eq!(
            ClientState::from_bytes("h\u{e9}".as_bytes())
                .text()
                .as_deref(),
            Some("h\u{e9}")
        );
        assert_eq!(ClientState::from_bytes(b"\xff").text(), None);
        assert_eq!(ClientState::from_bytes(b"a\x00").text(), None);
        // Only the canonical form is a stored state.
        assert_eq!(ClientState::from_encoded("a%20b"), None);
        assert!(ClientState::from_encoded("a+b").is_some());
        assert_eq!(decode_form_bytes(b"%FF+%2B%zz"), b"\xff +%zz");
    }

    /// No record that holds a secret prints it: CSRF tokens, PKCE verifiers and nonces,
    /// private keys stay out of `{:?}` (error messages, traces).
    #[test]
    fn no_debug_shows_a_secret() {
        let secret = "the-secret-value-9f2a";
        let request = AuthRequest {
            csrf: secret.into(),
            ..AuthRequest::new(LoginKind::Account, TokenHash::of("b"), 1, 2)
        };
        let session = Session {
            id_hash: TokenHash::of("s"),
            user_id: "u".into(),
            auth_time: 1,
            created_at: 1,
            expires_at: 2,
            csrf: secret.into(),
            method: "password".into(),
            user_agent: None,
            ip: None,
        };
        let login = ConnectorLogin {
            state_hash: TokenHash::of("st"),
            connector_id: "corp".into(),
            purpose: ConnectorPurpose::Login("r".into()),
            browser_hash: TokenHash::of("b"),
            nonce: Some(secret.into()),
            code_verifier: Some(secret.into()),
            email: None,
            created_at: 1,
            expires_at: 2,
        };
        let key = StoredKey {
            kid: "k".into(),
            alg: SigningAlg::ES256,
            private_der: secret.into(),
            public_jwk: "{}".into(),
            created_at: 1,
            retired_at: None,
        };
        for text in [
            format!("{request:?}"),
            format!("{session:?}"),
            format!("{login:?}"),
            format!("{key:?}"),
        ] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn redirect_uris() {
        assert!(validate_redirect_uri("https://app.example/cb").is_ok());
        assert!(validate_redirect_uri("http://127.0.0.1:5555/callback").is_ok());
        assert!(validate_redirect_uri("com.example.app:/cb").is_ok());
        assert!(validate_redirect_uri("http://app.example/cb").is_err());
        assert!(validate_redirect_uri("https://app.example/cb#x").is_err());
        assert!(validate_redirect_uri("javascript:alert(1)").is_err());
        assert!(validate_redirect_uri("/relative").is_err());
    }

    #[test]
    fn a_rotated_secret_is_accepted_until_its_grace_period_ends() {
        let client = Client {
            client_id: "reports".into(),
            name: "Reports".into(),
            secret_hash: Some(TokenHash::of("new")),
            previous_secret: Some(PreviousSecret {
                hash: TokenHash::of("old"),
                until: 1_000,
            }),
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            grant_types: vec!["client_credentials".into()],
            scopes: ScopeSet::parse("api").unwrap(),
            skip_consent: false,
            introspect: false,
            id_token_alg: SigningAlg::ES256,
            created_at: 0,
        };
        assert!(client.secret_matches("new", 999) && client.secret_matches("new", 5_000));
        assert!(client.secret_matches("old", 999));
        assert!(
            !client.secret_matches("old", 1_000),
            "the grace period is over"
        );
        assert!(!client.secret_matches("other", 999));
        assert_eq!(client.previous_secret_at(999), Some(&TokenHash::of("old")));
        assert_eq!(client.previous_secret_at(1_000), None);
    }

    /// Attack (RFC 8252 §8.6): another program on the machine starts a login as the
    /// public command-line client, with a redirect to its own port on 127.0.0.1; the
    /// person approved that client once before. A remembered approval must not hand it
    /// a code: only a confidential client's counts.
    #[test]
    fn a_public_client_asks_every_time() {
        let scope = |s: &str| ScopeSet::parse(s).unwrap();
        let mut client = Client {
            client_id: "device".into(),
            name: "CLI".into(),
            secret_hash: None,
            previous_secret: None,
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
            post_logout_redirect_uris: vec![],
            grant_types: vec!["authorization_code".into()],
            scopes: scope("openid offline_access"),
            skip_consent: false,
            introspect: false,
            id_token_alg: SigningAlg::ES256,
            created_at: 0,
        };
        let approved = scope("openid offline_access");
        let asked = scope("openid");
        assert!(
            client.needs_consent(false, Some(&approved), &asked),
            "public"
        );
        client.secret_hash = Some(TokenHash::of("s"));
        assert!(
            !client.needs_consent(false, Some(&approved), &asked),
            "confidential"
        );
        assert!(
            client.needs_consent(false, Some(&asked), &approved),
            "more than approved"
        );
        assert!(client.needs_consent(false, None, &asked), "never approved");
        assert!(
            client.needs_consent(true, Some(&approved), &asked),
            "prompt=consent"
        );
        client.skip_consent = true;
        assert!(!client.needs_consent(false, None, &asked), "first party");
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc_text(1_700_000_000), "2023-11-14 22:13:20Z");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00Z");
    }

    #[test]
    fn names() {
        assert!(validate_username("alice@example.com").is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username("a b").is_err());
        assert!(validate_client_id("demo-app").is_ok());
        assert!(validate_client_id("a:b").is_err());
    }
}
