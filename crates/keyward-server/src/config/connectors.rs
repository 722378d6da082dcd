//! `[[connectors]]`: the upstream identity providers people sign in with ("login
//! strategies"), as written in the configuration file and as validated for the server.
//!
//! Each entry has an `id` (it appears in the provider's redirect URI,
//! `<issuer>/callback/<id>`), a `type` (`oidc`, `github`, `email` or `password`) and a
//! display `name`; the rest depends on the type. A `password` connector (the local
//! users, signing in with a password) is always present: declared, or added as
//! `id = "password"` when the file declares none, so that adding GitHub does not
//! silently turn the password form off; `enabled = false` does.

use keyward_proto::{ClientSecret, Password};
use serde::Deserialize;
use url::Url;

use super::{ConfigError, invalid};
use crate::net::is_loopback_host;

/// The id of the password connector keyward adds when none is declared.
pub const DEFAULT_PASSWORD_CONNECTOR: &str = "password";

/// A connector as written in the file. Fields that do not apply to its type are
/// refused with a message naming them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectorFile {
    id: String,
    #[serde(rename = "type")]
    kind: ConnectorType,
    name: Option<String>,
    #[serde(default = "super::default_true")]
    enabled: bool,
    #[serde(default)]
    trust_email: bool,
    create_accounts: Option<bool>,
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<ClientSecret>,
    client_secret_file: Option<String>,
    scopes: Option<Vec<String>>,
    base_url: Option<String>,
    api_url: Option<String>,
    orgs: Option<Vec<String>>,
    smtp: Option<SmtpFile>,
    from: Option<String>,
    #[serde(default)]
    token_exchange: bool,
    exchange_audiences: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ConnectorType {
    Oidc,
    Github,
    Email,
    Password,
}

impl ConnectorType {
    /// The name as written after `type =` (the one place that spells it).
    fn as_str(self) -> &'static str {
        match self {
            Self::Oidc => "oidc",
            Self::Github => "github",
            Self::Email => "email",
            Self::Password => "password",
        }
    }
}

/// `smtp = { … }` of an email connector, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmtpFile {
    host: String,
    port: Option<u16>,
    #[serde(default)]
    tls: SmtpTls,
    username: Option<String>,
    password: Option<Password>,
    password_file: Option<String>,
    ca_file: Option<String>,
}

/// How keyward talks to the SMTP server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587 by default).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
    /// No encryption (port 25 by default): only for a relay on this machine.
    None,
}

/// A validated connector.
#[derive(Clone, Debug)]
pub struct ConnectorConfig {
    /// The id: lower-case letters, digits, `-` and `_`; part of the redirect URI.
    pub id: String,
    /// What the login page's button says.
    pub name: String,
    /// A disabled connector is not offered and its callbacks are refused; its
    /// identities stay linked.
    pub enabled: bool,
    /// Link a new identity to the one account holding the same address, when the
    /// provider says the address is verified. Off by default: only for providers that
    /// really verify addresses.
    pub trust_email: bool,
    /// Create an account for an identity nobody holds; when false, only identities
    /// already linked (or linked from the account page) can sign in.
    pub create_accounts: bool,
    /// Whether the provider's tokens (an `oidc` connector's ID tokens, a `github`
    /// connector's access tokens) are accepted as subject tokens in a token exchange,
    /// naming the linked account as a sign-in through it would.
    pub token_exchange: bool,
    /// What kind of provider, with its settings.
    pub kind: ConnectorKind,
}

impl ConnectorConfig {
    /// Whether an address this connector reports as verified may be stored as verified
    /// (and so be told to applications in `email_verified`): only when the connector
    /// is trusted to verify addresses (`trust_email`), or proves the address itself
    /// (the emailed-link connector). Anything else is what a provider claims, which a
    /// hostile or careless provider can claim about anyone's address.
    pub fn vouches_for_email(&self) -> bool {
        self.trust_email || matches!(self.kind, ConnectorKind::Email(_))
    }
}

/// The provider behind a connector.
#[derive(Clone, Debug)]
pub enum ConnectorKind {
    /// Any OpenID Connect provider, found by discovery.
    Oidc(OidcSettings),
    /// GitHub or GitHub Enterprise, through its OAuth web flow.
    Github(GithubSettings),
    /// A one-time link sent by email.
    Email(EmailSettings),
    /// The local users and their passwords.
    Password,
}

impl ConnectorKind {
    /// The `type` as written in the file.
    pub fn type_name(&self) -> &'static str {
        let written = match self {
            Self::Oidc(_) => ConnectorType::Oidc,
            Self::Github(_) => ConnectorType::Github,
            Self::Email(_) => ConnectorType::Email,
            Self::Password => ConnectorType::Password,
        };
        written.as_str()
    }

    /// Whether the browser goes to the provider and comes back to
    /// `<issuer>/callback/<id>` (the redirect URI to register there).
    pub fn uses_redirect(&self) -> bool {
        matches!(self, Self::Oidc(_) | Self::Github(_))
    }
}

/// An OpenID Connect provider.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// The issuer; its discovery document is at `<issuer>/.well-known/openid-configuration`.
    pub issuer: Url,
    /// keyward's client id at the provider.
    pub client_id: String,
    /// keyward's client secret there; `None` for a public client (PKCE only).
    pub client_secret: Option<ClientSecret>,
    /// Besides `client_id`, the `aud` values an ID token may have to be exchanged
    /// (`exchange_audiences`: other clients of the same provider whose users' ID tokens
    /// keyward accepts).
    pub exchange_audiences: Vec<String>,
    /// The scopes asked for; always includes `openid`.
    pub scopes: Vec<String>,
}

/// GitHub or GitHub Enterprise.
#[derive(Clone, Debug)]
pub struct GithubSettings {
    /// The OAuth app's client id.
    pub client_id: String,
    /// The OAuth app's client secret.
    pub client_secret: ClientSecret,
    /// The scopes asked for (`read:user user:email`, plus `read:org` for groups).
    pub scopes: Vec<String>,
    /// Where the OAuth pages are: `https://github.com`, or the Enterprise server.
    pub base_url: Url,
    /// Where the REST API is: `https://api.github.com`, or `<server>/api/v3`.
    pub api_url: Url,
    /// When not empty, only members of one of these organisations may sign in.
    pub orgs: Vec<String>,
}

impl GithubSettings {
    /// Whether organisation and team membership is read (the `read:org` scope).
    pub fn reads_orgs(&self) -> bool {
        self.scopes.iter().any(|s| s == "read:org")
    }
}

/// Sign-in by emailed link.
#[derive(Clone, Debug)]
pub struct EmailSettings {
    /// The SMTP server; `None` in development, where links are written to the log.
    pub smtp: Option<SmtpSettings>,
    /// The sender, as `Name <address>` or `address`.
    pub from: String,
}

/// An SMTP server.
#[derive(Clone, Debug)]
pub struct SmtpSettings {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Encryption.
    pub tls: SmtpTls,
    /// User name for SMTP AUTH.
    pub username: Option<String>,
    /// Password for SMTP AUTH.
    pub password: Option<Password>,
    /// PEM certificates of authorities trusted to sign the server's certificate, besides
    /// the public ones (`ca_file`: a private mail server).
    pub ca_pem: Option<String>,
}

/// Parses a provider URL: https, or http for this machine only.
fn provider_url(key: &str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text).map_err(|e| invalid(key, format!("{text:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(url.host_str()) => {}
        "http" => return Err(invalid(key, "must be https (http only for localhost)")),
        _ => return Err(invalid(key, "must be an https URL")),
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(invalid(key, "must not have a query, fragment or user info"));
    }
    Ok(url)
}

/// Validates the `[[connectors]]` of the file, adding the password connector when none
/// is declared. `issuer` decides whether an email connector may go without SMTP.
pub(super) fn validate(
    files: Vec<ConnectorFile>,
    issuer: &Url,
) -> Result<Vec<ConnectorConfig>, ConfigError> {
    let mut connectors: Vec<ConnectorConfig> = Vec::with_capacity(files.len() + 1);
    for (i, file) in files.into_iter().enumerate() {
        let connector = validate_one(&format!("connectors[{i}]"), file, issuer, &connectors)?;
        connectors.push(connector);
    }
    if !connectors
        .iter()
        .any(|c| matches!(c.kind, ConnectorKind::Password))
    {
        if connectors
            .iter()
            .any(|c| c.id == DEFAULT_PASSWORD_CONNECTOR)
        {
            return Err(invalid(
                "connectors",
                "the id \"password\" is kept for the password connector; declare it with type = \"password\" or choose another id",
            ));
        }
        connectors.push(ConnectorConfig {
            id: DEFAULT_PASSWORD_CONNECTOR.into(),
            name: "Password".into(),
            enabled: true,
            trust_email: false,
            create_accounts: false,
            token_exchange: false,
            kind: ConnectorKind::Password,
        });
    }
    Ok(connectors)
}

/// One `[[connectors]]` entry (`prefix` is how errors name it), checked against those
/// `declared` before it.
fn validate_one(
    prefix: &str,
    mut file: ConnectorFile,
    issuer: &Url,
    declared: &[ConnectorConfig],
) -> Result<ConnectorConfig, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let secret_given = file.client_secret.is_some() || file.client_secret_file.is_some();
    file.client_secret = super::secret_from(
        &key("client_secret"),
        file.client_secret.take(),
        file.client_secret_file.take().as_deref(),
        ClientSecret::new,
    )?;
    if let Some(smtp) = file.smtp.as_mut() {
        smtp.password = super::secret_from(
            &key("smtp.password"),
            smtp.password.take(),
            smtp.password_file.take().as_deref(),
            Password::new,
        )?;
    }
    check_id(&key("id"), &key("type"), &file, declared)?;
    check_keys_apply(prefix, &file, secret_given)?;
    let (default_name, settings) = match file.kind {
        ConnectorType::Oidc => oidc_settings(prefix, &mut file)?,
        ConnectorType::Github => github_settings(prefix, &mut file)?,
        ConnectorType::Email => email_settings(prefix, &mut file, issuer)?,
        ConnectorType::Password => ("Password".to_owned(), ConnectorKind::Password),
    };
    let name = file.name.unwrap_or(default_name);
    if name.trim().is_empty() || name.chars().count() > 64 {
        return Err(invalid(key("name"), "must be 1 to 64 characters"));
    }
    Ok(ConnectorConfig {
        id: file.id,
        name,
        enabled: file.enabled,
        trust_email: file.trust_email,
        create_accounts: file.create_accounts.unwrap_or(true)
            && !matches!(settings, ConnectorKind::Password),
        token_exchange: file.token_exchange,
        kind: settings,
    })
}

/// The id is well formed and not taken; at most one password connector.
fn check_id(
    id_key: &str,
    type_key: &str,
    file: &ConnectorFile,
    declared: &[ConnectorConfig],
) -> Result<(), ConfigError> {
    let well_formed = !file.id.is_empty()
        && file.id.len() <= 32
        && file
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(invalid(
            id_key,
            format!(
                "{:?} must be 1 to 32 lower-case letters, digits, - or _",
                file.id
            ),
        ));
    }
    if declared.iter().any(|c| c.id == file.id) {
        return Err(invalid(id_key, format!("{:?} is declared twice", file.id)));
    }
    if file.kind == ConnectorType::Password
        && declared
            .iter()
            .any(|c| matches!(c.kind, ConnectorKind::Password))
    {
        return Err(invalid(
            type_key,
            "only one password connector can be declared",
        ));
    }
    Ok(())
}

/// Refuses keys that do not apply to the connector's type, naming them.
fn check_keys_apply(
    prefix: &str,
    file: &ConnectorFile,
    secret_given: bool,
) -> Result<(), ConfigError> {
    // The keys each type takes besides id, type, name and enabled.
    let takes: &[&str] = match file.kind {
        ConnectorType::Oidc => &[
            "issuer",
            "client_id",
            "client_secret",
            "scopes",
            "trust_email",
            "create_accounts",
            "token_exchange",
            "exchange_audiences",
        ],
        ConnectorType::Github => &[
            "client_id",
            "client_secret",
            "scopes",
            "base_url",
            "api_url",
            "orgs",
            "trust_email",
            "create_accounts",
            "token_exchange",
        ],
        ConnectorType::Email => &["smtp", "from", "trust_email", "create_accounts"],
        ConnectorType::Password => &[],
    };
    for (field, present) in [
        ("issuer", file.issuer.is_some()),
        ("client_id", file.client_id.is_some()),
        ("client_secret", secret_given),
        ("scopes", file.scopes.is_some()),
        ("base_url", file.base_url.is_some()),
        ("api_url", file.api_url.is_some()),
        ("orgs", file.orgs.is_some()),
        ("smtp", file.smtp.is_some()),
        ("from", file.from.is_some()),
        ("trust_email", file.trust_email),
        ("create_accounts", file.create_accounts.is_some()),
        ("token_exchange", file.token_exchange),
        ("exchange_audiences", file.exchange_audiences.is_some()),
    ] {
        if present && !takes.contains(&field) {
            return Err(invalid(
                format!("{prefix}.{field}"),
                format!("does not apply to type = {:?}", file.kind.as_str()),
            ));
        }
    }
    Ok(())
}

/// A key a type requires, not blank.
fn required(
    prefix: &str,
    kind: ConnectorType,
    field: &str,
    value: Option<String>,
) -> Result<String, ConfigError> {
    value.filter(|v| !v.trim().is_empty()).ok_or_else(|| {
        invalid(
            format!("{prefix}.{field}"),
            format!("is required for type = {:?}", kind.as_str()),
        )
    })
}

/// `type = "oidc"`: the default name (the issuer's host) and the settings.
fn oidc_settings(
    prefix: &str,
    file: &mut ConnectorFile,
) -> Result<(String, ConnectorKind), ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let issuer_text = required(prefix, file.kind, "issuer", file.issuer.take())?;
    let issuer = provider_url(&key("issuer"), &issuer_text)?;
    let scopes = file
        .scopes
        .take()
        .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        return Err(invalid(key("scopes"), "must include \"openid\""));
    }
    check_scopes(&key("scopes"), &scopes)?;
    let exchange_audiences = file.exchange_audiences.take().unwrap_or_default();
    if !exchange_audiences.is_empty() && !file.token_exchange {
        return Err(invalid(
            key("exchange_audiences"),
            "applies only with token_exchange = true",
        ));
    }
    if let Some(i) = exchange_audiences.iter().position(|a| a.trim().is_empty()) {
        return Err(invalid(
            format!("{prefix}.exchange_audiences[{i}]"),
            "must not be empty",
        ));
    }
    Ok((
        issuer.host_str().unwrap_or("OpenID Connect").to_owned(),
        ConnectorKind::Oidc(OidcSettings {
            issuer,
            client_id: required(prefix, file.kind, "client_id", file.client_id.take())?,
            client_secret: file.client_secret.take(),
            exchange_audiences,
            scopes,
        }),
    ))
}

/// `type = "github"`: GitHub.com or an Enterprise server.
fn github_settings(
    prefix: &str,
    file: &mut ConnectorFile,
) -> Result<(String, ConnectorKind), ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let client_secret = file
        .client_secret
        .take()
        .ok_or_else(|| invalid(key("client_secret"), "is required for type = \"github\""))?;
    let base_url = provider_url(
        &key("base_url"),
        file.base_url.as_deref().unwrap_or("https://github.com"),
    )?;
    let api_url = provider_url(
        &key("api_url"),
        file.api_url.as_deref().unwrap_or("https://api.github.com"),
    )?;
    let orgs = file.orgs.take().unwrap_or_default();
    let mut scopes = file
        .scopes
        .take()
        .unwrap_or_else(|| vec!["read:user".into(), "user:email".into()]);
    if !orgs.is_empty() && !scopes.iter().any(|s| s == "read:org") {
        scopes.push("read:org".into());
    }
    check_scopes(&key("scopes"), &scopes)?;
    Ok((
        "GitHub".to_owned(),
        ConnectorKind::Github(GithubSettings {
            client_id: required(prefix, file.kind, "client_id", file.client_id.take())?,
            client_secret,
            scopes,
            base_url,
            api_url,
            orgs,
        }),
    ))
}

/// `type = "email"`: an SMTP server (none only while the issuer is on this machine)
/// and the sender.
fn email_settings(
    prefix: &str,
    file: &mut ConnectorFile,
    issuer: &Url,
) -> Result<(String, ConnectorKind), ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let smtp = match file.smtp.take() {
        Some(smtp) => Some(smtp_settings(&key("smtp"), smtp)?),
        None if is_loopback_host(issuer.host_str()) => None,
        None => {
            return Err(invalid(
                key("smtp"),
                "is required unless the issuer is on this machine (development, where links go to the log)",
            ));
        }
    };
    let from = file
        .from
        .take()
        .unwrap_or_else(|| format!("keyward <keyward@{}>", mail_domain(issuer)));
    if !from.contains('@') || from.contains(['\r', '\n']) {
        return Err(invalid(
            key("from"),
            "must be an address like \"Name <sign-in@example.com>\"",
        ));
    }
    Ok((
        "Email".to_owned(),
        ConnectorKind::Email(EmailSettings { smtp, from }),
    ))
}

fn check_scopes(key: &str, scopes: &[String]) -> Result<(), ConfigError> {
    if scopes.is_empty()
        || scopes
            .iter()
            .any(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(invalid(key, "must be a list of scope names without spaces"));
    }
    Ok(())
}

fn smtp_settings(key: &str, smtp: SmtpFile) -> Result<SmtpSettings, ConfigError> {
    if smtp.host.trim().is_empty() {
        return Err(invalid(format!("{key}.host"), "must not be empty"));
    }
    if smtp.username.is_some() != smtp.password.is_some() {
        return Err(invalid(
            format!("{key}.username"),
            "username and password go together",
        ));
    }
    if smtp.tls == SmtpTls::None && smtp.password.is_some() && !is_loopback_host(Some(&smtp.host)) {
        return Err(invalid(
            format!("{key}.tls"),
            "\"none\" would send the password in clear; use starttls or tls",
        ));
    }
    let ca_pem = match smtp.ca_file.as_deref() {
        None => None,
        Some(_) if smtp.tls == SmtpTls::None => {
            return Err(invalid(
                format!("{key}.ca_file"),
                "applies only with tls = \"starttls\" or \"tls\"",
            ));
        }
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                invalid(format!("{key}.ca_file"), format!("cannot read {path}: {e}"))
            })?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(
                    format!("{key}.ca_file"),
                    format!("{path} holds no PEM certificate"),
                ));
            }
            Some(pem)
        }
    };
    let port = smtp.port.unwrap_or(match smtp.tls {
        SmtpTls::Starttls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    });
    Ok(SmtpSettings {
        host: smtp.host,
        port,
        tls: smtp.tls,
        username: smtp.username,
        password: smtp.password,
        ca_pem,
    })
}

/// The domain of the default sender address: the issuer's host, or `localhost`.
fn mail_domain(issuer: &Url) -> String {
    match issuer.host() {
        Some(url::Host::Domain(domain)) => domain.to_owned(),
        _ => "localhost".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::Config;
    use super::*;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(text, &BTreeMap::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn every_type_with_its_defaults() {
        let config = load(
            r#"
[[connectors]]
id = "corp"
type = "oidc"
issuer = "https://sso.example.com"
client_id = "keyward"

[[connectors]]
id = "github"
type = "github"
client_id = "abc"
client_secret = "def"
orgs = ["acme"]

[[connectors]]
id = "email"
type = "email"
"#,
        )
        .unwrap();
        let ids: Vec<_> = config.connectors.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            ["corp", "github", "email", "password"],
            "password added last"
        );
        let ConnectorKind::Oidc(oidc) = &config.connectors[0].kind else {
            panic!("oidc")
        };
        assert_eq!(oidc.scopes, ["openid", "profile", "email"]);
        assert!(oidc.client_secret.is_none(), "a public client");
        assert_eq!(config.connectors[0].name, "sso.example.com");
        let ConnectorKind::Github(github) = &config.connectors[1].kind else {
            panic!("github")
        };
        assert_eq!(github.api_url.as_str(), "https://api.github.com/");
        assert!(github.reads_orgs(), "orgs need read:org, added");
        let ConnectorKind::Email(email) = &config.connectors[2].kind else {
            panic!("email")
        };
        assert!(
            email.smtp.is_none(),
            "development: the issuer is on this machine"
        );
        assert_eq!(email.from, "keyward <keyward@localhost>");
        assert!(
            config
                .connectors
                .iter()
                .all(|c| c.enabled && !c.trust_email)
        );
        assert!(!config.connectors[3].create_accounts);
        assert_eq!(
            config.connector_redirect_uri("corp"),
            "http://127.0.0.1:8080/callback/corp"
        );
        assert!(config.password_login().is_some());
    }

    /// `token_exchange` (oidc and github) and `exchange_audiences` (oidc, only with
    /// `token_exchange`) are read, and refused where they do not apply, naming the key.
    #[test]
    fn token_exchange_keys_are_validated() {
        let oidc = "[[connectors]]\nid = \"corp\"\ntype = \"oidc\"\nissuer = \"https://sso.example.com\"\nclient_id = \"keyward\"\n";
        let github = "[[connectors]]\nid = \"gh\"\ntype = \"github\"\nclient_id = \"a\"\nclient_secret = \"b\"\n";
        let config = load(&format!(
            "{oidc}token_exchange = true\nexchange_audiences = [\"portal\"]\n{github}token_exchange = true\n"
        ))
        .unwrap();
        assert!(config.connectors[0].token_exchange && config.connectors[1].token_exchange);
        let ConnectorKind::Oidc(settings) = &config.connectors[0].kind else {
            panic!("oidc")
        };
        assert_eq!(settings.exchange_audiences, ["portal"]);
        let off = load(&format!("{oidc}{github}")).unwrap();
        assert!(
            off.connectors.iter().all(|c| !c.token_exchange),
            "off by default"
        );
        for (text, key) in [
            (
                format!("{oidc}exchange_audiences = [\"portal\"]"),
                "connectors[0].exchange_audiences",
            ),
            (
                format!("{oidc}token_exchange = true\nexchange_audiences = [\"\"]"),
                "connectors[0].exchange_audiences[0]",
            ),
            (
                format!("{github}token_exchange = true\nexchange_audiences = [\"x\"]"),
                "connectors[0].exchange_audiences",
            ),
            (
                "[[connectors]]\nid = \"mail\"\ntype = \"email\"\ntoken_exchange = true".to_owned(),
                "connectors[0].token_exchange",
            ),
        ] {
            let err = load(&text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn the_password_form_can_be_turned_off() {
        let config =
            load("[[connectors]]\nid = \"local\"\ntype = \"password\"\nenabled = false\n").unwrap();
        assert_eq!(config.connectors.len(), 1);
        assert!(config.password_login().is_none());
    }

    #[test]
    fn bad_connectors_are_named() {
        let cases = [
            (
                "[[connectors]]\nid = \"Corp\"\ntype = \"password\"",
                "connectors[0].id",
            ),
            ("[[connectors]]\nid = \"x\"\ntype = \"saml\"", "saml"),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"oidc\"\nclient_id = \"c\"",
                "connectors[0].issuer",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"oidc\"\nissuer = \"http://sso.example.com\"\nclient_id = \"c\"",
                "connectors[0].issuer",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"oidc\"\nissuer = \"https://a\"\nclient_id = \"c\"\nscopes = [\"profile\"]",
                "connectors[0].scopes",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"github\"\nclient_id = \"c\"",
                "connectors[0].client_secret",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"github\"\nclient_id = \"c\"\nclient_secret = \"s\"\nsmtp = { host = \"h\" }",
                "connectors[0].smtp",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"email\"\nfrom = \"nobody\"",
                "connectors[0].from",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"email\"\nsmtp = { host = \"mail.example.com\", tls = \"none\", username = \"u\", password = \"p\" }",
                "connectors[0].smtp.tls",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"email\"\nsmtp = { host = \"mail.example.com\", tls = \"none\", ca_file = \"/dev/null\" }",
                "connectors[0].smtp.ca_file",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"email\"\nsmtp = { host = \"mail.example.com\", ca_file = \"/dev/null\" }",
                "connectors[0].smtp.ca_file",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"email\"\nsmtp = { host = \"mail.example.com\", ca_file = \"/nonexistent/ca.pem\" }",
                "connectors[0].smtp.ca_file",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"password\"\ntrust_email = true",
                "connectors[0].trust_email",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"password\"\n[[connectors]]\nid = \"y\"\ntype = \"password\"",
                "connectors[1].type",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"email\"\n[[connectors]]\nid = \"x\"\ntype = \"email\"",
                "connectors[1].id",
            ),
            (
                "[[connectors]]\nid = \"password\"\ntype = \"email\"",
                "connectors",
            ),
            (
                "[[connectors]]\nid = \"x\"\ntype = \"email\"\nbogus = 1",
                "bogus",
            ),
        ];
        for (text, key) in cases {
            let err = load(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
        // An email connector needs SMTP once the issuer is a real host.
        let err = load(
            "issuer = \"https://id.example.com\"\n[[connectors]]\nid = \"x\"\ntype = \"email\"",
        )
        .unwrap_err();
        assert!(err.contains("connectors[0].smtp"), "{err}");
    }
}
