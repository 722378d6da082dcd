//! Sign-in by emailed link: the message and its delivery over SMTP (lettre).
//!
//! The token in the link is 256 random bits, stored only as its SHA-256, usable once,
//! for [`LINK_TTL`]; the HTTP side (`http/callback.rs`) throttles requests
//! per address and answers the same whether or not the address is known. Without SMTP
//! (allowed only when the issuer is on this machine) the link is written to the log,
//! and `keyward serve` says so when it starts.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

use keyward_proto::error::error_chain;

use super::UpstreamError;
use crate::config::Config;
use crate::config::connectors::{EmailSettings, SmtpTls};

/// How long an emailed link works.
pub const LINK_TTL: Duration = Duration::from_secs(15 * 60);
/// How long keyward waits for the SMTP server.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Sends sign-in links.
pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    site: String,
}

/// Normalises an address typed into the form: trimmed, lower-case, a valid
/// `local@domain` of at most 254 bytes. `None` when it is not one.
pub fn normalize_address(text: &str) -> Option<String> {
    let text = text.trim().to_lowercase();
    if text.is_empty() || text.len() > 254 {
        return None;
    }
    text.parse::<Address>().ok().map(|a| a.to_string())
}

impl Mailer {
    /// Prepares the SMTP transport (nothing is contacted until the first message).
    pub fn new(settings: &EmailSettings, config: &Config) -> Result<Self, UpstreamError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| UpstreamError::Mail(format!("bad sender {:?}: {e}", settings.from)))?;
        let site = config.issuer.host_str().unwrap_or("keyward").to_owned();
        let transport = match &settings.smtp {
            None => None,
            Some(smtp) => {
                let failed = |e: lettre::transport::smtp::Error| {
                    UpstreamError::Mail(format!("SMTP server {}: {e}", smtp.host))
                };
                // The server's certificate must be valid for `host` and signed by a
                // public authority or one of `ca_file`.
                let tls_parameters = || {
                    let mut params = TlsParameters::builder(smtp.host.clone());
                    if let Some(pem) = &smtp.ca_pem {
                        params = params.add_root_certificate(
                            Certificate::from_pem(pem.as_bytes()).map_err(failed)?,
                        );
                    }
                    params.build().map_err(failed)
                };
                let builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone());
                let builder = match smtp.tls {
                    // STARTTLS must succeed: nothing, credentials included, goes in clear.
                    SmtpTls::Starttls => builder.tls(Tls::Required(tls_parameters()?)),
                    SmtpTls::Tls => builder.tls(Tls::Wrapper(tls_parameters()?)),
                    SmtpTls::None => builder,
                };
                let mut builder = builder
                    .port(smtp.port)
                    .timeout(Some(SMTP_TIMEOUT))
                    .hello_name(ClientId::Domain(site.clone()));
                if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
                    builder = builder
                        .credentials(Credentials::new(user.clone(), password.secret().to_owned()));
                }
                Some(builder.build())
            }
        };
        Ok(Self {
            transport,
            from,
            site,
        })
    }

    /// Whether links go to the log instead of a mailbox (development).
    pub fn writes_to_log(&self) -> bool {
        self.transport.is_none()
    }

    /// Sends `link` to `to` (a normalised address).
    pub async fn send_link(&self, to: &str, link: &str) -> Result<(), UpstreamError> {
        let Some(transport) = &self.transport else {
            tracing::warn!(
                to,
                link,
                "sign-in link (no SMTP server configured: development only)"
            );
            return Ok(());
        };
        let address: Address = to
            .parse()
            .map_err(|e| UpstreamError::Mail(format!("bad address: {e}")))?;
        let minutes = LINK_TTL.as_secs() / 60;
        let site = &self.site;
        let text = format!(
            "Someone, hopefully you, asked to sign in to {site} with this address.\n\n\
             Open this link to sign in:\n\n{link}\n\n\
             It works once, in the browser where you asked for it, for {minutes} minutes.\n\
             If you did not ask for it, ignore this message: nothing happens without the link.\n"
        );
        let html = format!(
            "<p>Someone, hopefully you, asked to sign in to <strong>{site}</strong> with this address.</p>\
             <p><a href=\"{link}\" style=\"display:inline-block;padding:10px 16px;background:#3b5bdb;color:#fff;border-radius:8px;text-decoration:none\">Sign in to {site}</a></p>\
             <p>It works once, in the browser where you asked for it, for {minutes} minutes. \
             If you did not ask for it, ignore this message: nothing happens without the link.</p>",
            site = html_escape(site),
            link = html_escape(link),
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, address))
            .subject(format!("Your sign-in link for {site}"))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| UpstreamError::Mail(e.to_string()))?;
        transport
            .send(message)
            .await
            .map_err(|e| UpstreamError::Mail(error_chain(&e)))?;
        Ok(())
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(
            normalize_address("  Alice@Example.COM ").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(normalize_address("not an address"), None);
        assert_eq!(normalize_address("a@b@c"), None);
        assert_eq!(normalize_address(""), None);
        assert_eq!(
            normalize_address(&format!("{}@x.org", "a".repeat(260))),
            None
        );
        assert_eq!(normalize_address("bob@example.com\r\nBcc: x@y"), None);
    }
}
