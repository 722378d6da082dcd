//! The server's configuration file (keyward-server `config.rs`, `Config::from_toml`,
//! what `Config::load` does with the file's text): TOML into the typed configuration,
//! with every value's own parser (addresses, URLs, durations, connectors, token
//! exchange policies). No environment variable is given. Every string value of the
//! file is also read as a duration by the server's reader (`config::parse_duration`)
//! and keyward-guard's (`keyward_guard::parse_duration`, for `[guard]` in the same file
//! and the guard's options), which must agree.
#![no_main]

use std::collections::BTreeMap;

use keyward_server::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_toml(text, &BTreeMap::new());
    // Every string of the file, as a duration: both readers must agree.
    if let Ok(table) = text.parse::<toml::Table>() {
        let table = toml::Value::Table(table);
        let mut strings = Vec::new();
        collect_strings(&table, &mut strings);
        for value in strings {
            same_duration(value);
        }
    } else if text.len() <= 64 {
        same_duration(text);
    }
});

fn collect_strings<'a>(value: &'a toml::Value, out: &mut Vec<&'a str>) {
    match value {
        toml::Value::String(text) => out.push(text),
        toml::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        toml::Value::Table(table) => table.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// The server's duration reader (`config::parse_duration`) and the guard's
/// (`keyward_guard::parse_duration`, for `[guard]` and the guard's options) read one
/// text alike.
fn same_duration(text: &str) {
    let server = keyward_server::config::parse_duration(text);
    let guard = keyward_guard::parse_duration(text);
    if let (Ok(server), Ok(guard)) = (&server, &guard) {
        assert_eq!(server, guard, "{text:?}");
    }
}
