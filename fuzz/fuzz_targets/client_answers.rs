//! What the terminal client reads from a server's answers (keyward-client): a device
//! authorization answer (RFC 8628 §3.2) and the polling schedule it sets
//! (`device::DevicePoll::new`, then `decide` on each kind of reply), and a token answer
//! (RFC 6749 §5.1) turned into the token file it saves (`login::token_file_for`, which
//! reads `exp` and the user's name from the tokens, unverified, for display).
//!
//! The first byte picks what the rest is: even, a device authorization answer; odd, a
//! token answer.
#![no_main]

use std::time::{Duration, Instant};

use keyward_client::ClientError;
use keyward_client::device::{DevicePoll, PollDecision};
use keyward_client::login::token_file_for;
use keyward_client::tokenfile::TokenFile;
use keyward_proto::device::DeviceAuthorizationResponse;
use keyward_proto::token::TokenResponse;
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let Ok(answer) = serde_json::from_slice::<DeviceAuthorizationResponse>(rest) else {
            return;
        };
        let started = Instant::now();
        let mut poll = DevicePoll::new(answer.interval, answer.expires_in, started);
        let mut now = started + poll.interval;
        let refused = |code: &str| {
            Err(ClientError::Refused {
                url: "https://id.example.com/token".into(),
                error: code.into(),
                description: None,
            })
        };
        let unavailable = || {
            Err(ClientError::Status {
                url: "https://id.example.com/token".into(),
                status: 503,
            })
        };
        for answer in [
            refused("authorization_pending"),
            refused("slow_down"),
            unavailable(),
            unavailable(),
            refused("slow_down"),
            unavailable(),
        ] {
            match poll.decide(answer, now) {
                PollDecision::Wait(wait) => now += wait,
                PollDecision::Done(_) | PollDecision::Fail(_) => break,
            }
        }
    } else {
        let Ok(tokens) = serde_json::from_slice::<TokenResponse>(rest) else {
            return;
        };
        let previous = TokenFile {
            access_token: "old".into(),
            refresh_token: Some("old-refresh".into()),
            expires_at: NOW - 10,
            ..TokenFile::default()
        };
        let server = url::Url::parse("https://id.example.com").unwrap();
        let file = token_file_for(
            tokens,
            Some(&previous),
            "https://id.example.com/token",
            &server,
            "keyward-cli",
            NOW,
        );
        let _ = file.is_fresh(NOW, 60);
        let _ = Duration::from_secs(file.expires_in.unwrap_or(0));
    }
});
