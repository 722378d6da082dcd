//! WebSocket text frames read as protocol messages: keyward-guard's in-band `auth`
//! frame (`ws::classify`) and the client's guard control messages
//! (keyward-client `ws.rs`, `GuardMessage::parse`).
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
    let _ = keyward_client::ws::GuardMessage::parse(text);
});
