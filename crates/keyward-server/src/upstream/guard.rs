//! What keyward accepts from a provider over HTTP, whoever the provider is: a hostile
//! or compromised provider (or whoever tampers with its answers) must not make keyward
//! read without limit, nor make it send requests, with tokens, to places the provider
//! chose on keyward's network.
//!
//! - Every answer is read up to [`MAX_ANSWER`] bytes, then refused.
//! - Every URL keyward fetches or sends a browser to must be https, or http to this
//!   machine (as the issuer of a connector must be), and must not name a link-local,
//!   metadata, unspecified or multicast address ([`crate::net::is_forbidden_target`]):
//!   checked on the URLs a discovery document announces ([`endpoint_allowed`]), on every
//!   request ([`ProviderHttp`]), and on what host names resolve to ([`GuardedResolver`]).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use openidconnect::{AsyncHttpClient, HttpClientError, HttpRequest, HttpResponse};
use url::{Host, Url};

use super::UpstreamError;

/// The most bytes read of any provider's answer (the terminal client reads the same).
pub const MAX_ANSWER: usize = 1 << 20;

/// Why a URL a provider named is not used; `None` when it may be.
pub fn endpoint_allowed(url: &Url) -> Result<(), String> {
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => {
            check_ip(IpAddr::V4(ip))?;
            ip.is_loopback()
        }
        Some(Host::Ipv6(ip)) => {
            check_ip(IpAddr::V6(ip))?;
            ip.is_loopback()
        }
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => return Err(format!("{url} has no host")),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!("{url} is not https (http only on this machine)")),
    }
}

fn check_ip(ip: IpAddr) -> Result<(), String> {
    if crate::net::is_forbidden_target(ip) {
        Err(format!(
            "{ip} is a link-local, metadata, multicast or unspecified address"
        ))
    } else {
        Ok(())
    }
}

/// Reads a provider's answer, up to [`MAX_ANSWER`] bytes.
pub async fn read_capped(
    url: &str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, UpstreamError> {
    let too_large = || UpstreamError::Malformed {
        url: url.to_owned(),
        detail: format!("the answer is larger than {MAX_ANSWER} bytes"),
    };
    if response
        .content_length()
        .is_some_and(|length| length > MAX_ANSWER as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| UpstreamError::Unreachable {
            url: url.to_owned(),
            source,
        })?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The HTTP client `openidconnect` talks to providers through: reqwest, with every
/// request's URL checked ([`endpoint_allowed`]) and every answer read up to
/// [`MAX_ANSWER`] bytes.
#[derive(Clone, Debug)]
pub struct ProviderHttp(pub reqwest::Client);

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = HttpClientError<reqwest::Error>;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request: reqwest::Request = request.try_into().map_err(Box::new)?;
            endpoint_allowed(request.url()).map_err(HttpClientError::Other)?;
            let url = request.url().to_string();
            let response = self.0.execute(request).await.map_err(Box::new)?;
            let mut builder = openidconnect::http::Response::builder()
                .status(response.status())
                .version(response.version());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = read_capped(&url, response)
                .await
                .map_err(|e| HttpClientError::Other(e.to_string()))?;
            builder.body(body).map_err(HttpClientError::Http)
        })
    }
}

/// Resolves host names as the system does, keeping only addresses keyward may contact
/// on a provider's say-so: a name that resolves to a metadata address is refused.
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = allowed_addresses(found);
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no address keyward may contact").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The addresses of a resolved name that keyward may contact.
fn allowed_addresses(found: Vec<SocketAddr>) -> Vec<SocketAddr> {
    found
        .into_iter()
        .filter(|addr| !crate::net::is_forbidden_target(addr.ip()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_urls_are_https_or_this_machine_and_never_metadata() {
        for ok in [
            "https://sso.example.com/token",
            "http://127.0.0.1:8080/token",
            "http://localhost:9/jwks",
            "http://[::1]:9/jwks",
            "https://10.1.2.3/token",
        ] {
            assert!(endpoint_allowed(&ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for bad in [
            "http://sso.example.com/token",
            "http://169.254.169.254/latest/meta-data/",
            "https://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "https://[fe80::1]/",
            "https://0.0.0.0/",
            "ftp://sso.example.com/",
        ] {
            assert!(endpoint_allowed(&bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_resolving_to_metadata_addresses_are_dropped() {
        let found = vec![
            "169.254.169.254:0".parse().unwrap(),
            "93.184.216.34:0".parse().unwrap(),
            "[fd00:ec2::254]:0".parse().unwrap(),
        ];
        assert_eq!(
            allowed_addresses(found),
            vec!["93.184.216.34:0".parse::<SocketAddr>().unwrap()]
        );
    }
}
