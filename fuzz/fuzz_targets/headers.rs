//! Request headers keyward reads besides `Authorization`: the client address behind
//! trusted proxies from `Forwarded` (RFC 7239) and `X-Forwarded-For`
//! (keyward-server `net::client_ip`, with its address group for throttles), networks
//! as `trusted_proxies` names them (`net::IpNet`), and cookies
//! (`http::extract::cookie`). The input is the `Forwarded` value, a newline, the
//! `X-Forwarded-For` value, a newline, the `Cookie` value.
#![no_main]

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue, header};
use keyward_server::http::extract::cookie;
use keyward_server::net::{IpNet, client_ip, throttle_group};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let forwarded = parts.next().unwrap_or_default();
    let x_forwarded_for = parts.next().unwrap_or_default();
    let cookies = parts.next().unwrap_or_default();
    let text = |bytes: &[u8]| {
        // What a header value may hold, as hyper hands it over.
        HeaderValue::from_bytes(bytes)
            .ok()
            .and_then(|v| v.to_str().ok().map(str::to_owned))
    };
    let (forwarded, x_forwarded_for) = (text(forwarded), text(x_forwarded_for));
    let trusted: Vec<IpNet> = ["10.0.0.0/8", "fd00::/8"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    for peer in ["10.1.2.3", "203.0.113.9", "fd00::1"] {
        let peer: IpAddr = peer.parse().unwrap();
        let client = client_ip(
            peer,
            forwarded.as_deref().into_iter(),
            x_forwarded_for.as_deref().into_iter(),
            &trusted,
        );
        // An untrusted peer is the client, whatever it sends.
        if !trusted.iter().any(|net| net.contains(peer)) {
            assert_eq!(client, peer);
        }
        let _ = throttle_group(client);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(net) = text.parse::<IpNet>() {
            let _ = net.contains("10.0.0.1".parse().unwrap());
            let _ = net.to_string().parse::<IpNet>().unwrap();
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(cookies) {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, value);
        let _ = cookie(&headers, "keyward_session");
        let _ = cookie(&headers, "__Host-keyward_session");
    }
});
