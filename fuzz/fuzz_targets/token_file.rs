//! The terminal client's token file, `auth.toml` (keyward-client `tokenfile.rs`,
//! `TokenFile::parse`, what `TokenStore::load` reads), and the token file a Julia
//! package server answers `GET refresh_url` with (`http.rs`,
//! `read_julia_token_file`). A token file that was read is written back and must read
//! again: what the client saves it must be able to load.
#![no_main]

use keyward_client::http::read_julia_token_file;
use keyward_client::tokenfile::TokenFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_julia_token_file("https://pkg.example.com/auth/refresh", data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(token) = TokenFile::parse(text) {
        let _ = token.is_fresh(1_800_000_000, 300);
        if let Ok(saved) = toml::to_string(&token) {
            assert!(
                TokenFile::parse(&saved).is_some(),
                "a token file that was read does not read again once saved"
            );
        }
    }
});
