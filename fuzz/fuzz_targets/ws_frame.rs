//! WebSocket text frames read as protocol messages: keyward-guard's in-band `auth`
//! frame (`ws::classify`) and the client's guard control messages
//! (keyward-client `ws.rs`, `GuardMessage::parse`), taken in by the client's session
//! (`Session::handle`, then when to re-authenticate: `reauth_due`, `reauth_in`).
#![no_main]

use keyward_guard::ws::{Frame, classify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Frame::Data(passed) = classify(text) {
        // Data goes to the service exactly as it came.
        assert_eq!(passed, text);
    }
    if let Some(message) = keyward_client::ws::GuardMessage::parse(text) {
        let mut session = keyward_client::ws::Session::default();
        session.sent_auth();
        let _ = session.handle(message);
        for now in [0, 1_800_000_000, i64::MAX] {
            let _ = session.reauth_due(now, 60);
            if let Some(wait) = session.reauth_in(now, 60) {
                assert!(wait >= 0);
            }
        }
    }
});
