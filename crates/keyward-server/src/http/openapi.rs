//! `GET /openapi.json`: the OpenAPI 3.1 description of every endpoint keyward serves,
//! form bodies, error answers, pages, redirects and security schemes included.
//!
//! The description is `openapi.json` beside this file, compiled in. Served, it is fitted
//! to this server ([`describe`]): `servers` names the issuer (its path included, which
//! is where every path is nested), the `/auth/` paths are left out when `[pkg_auth]` is
//! off, and cookie parameters carry the names this configuration gives the cookies. A
//! test in [`super`] keeps it and the router in step both ways, through
//! [`super::routes::Routes`] and [`operations`].

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;
use super::routes::Routes;
use crate::config::Config;
use crate::state::AppState;

/// The description as written, for a server with the default configuration.
const DOCUMENT: &str = include_str!("openapi.json");

/// The path prefix of the Julia package-server protocol, served only with
/// `[pkg_auth] enabled`.
const PKG_PREFIX: &str = "/auth/";

/// The HTTP methods an OpenAPI path item may describe, as its keys.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new().get("/openapi.json", document)
}

async fn document(State(state): State<AppState>) -> Response {
    match describe(state.config()) {
        Ok(description) => (
            [(header::CACHE_CONTROL, "public, max-age=300")],
            Json(description),
        )
            .into_response(),
        Err(e) => ApiError::Internal(Box::new(e)).into_response(),
    }
}

/// The description as a server with `config` serves it: its issuer in `servers`, its
/// version, its cookie names, and `/auth/` only with `[pkg_auth] enabled`.
pub fn describe(config: &Config) -> Result<Value, serde_json::Error> {
    let mut description: Value = serde_json::from_str(DOCUMENT)?;
    description["info"]["version"] = Value::from(env!("CARGO_PKG_VERSION"));
    description["servers"] = serde_json::json!([{
        "url": config.issuer_str(),
        "description": "The issuer: every path is under it.",
    }]);
    if !config.pkg_auth.enabled {
        if let Some(paths) = description["paths"].as_object_mut() {
            paths.retain(|path, _| !path.starts_with(PKG_PREFIX));
        }
        if let Some(tags) = description["tags"].as_array_mut() {
            tags.retain(|tag| tag["name"] != "julia");
        }
    }
    if let Some(parameters) = description["components"]["parameters"].as_object_mut() {
        for parameter in parameters.values_mut() {
            if parameter["in"] == "cookie"
                && let Some(name) = parameter["name"].as_str()
            {
                parameter["name"] = Value::from(config.cookie_name(name));
            }
        }
    }
    Ok(description)
}

/// Every (method, path) `description` describes, the method in upper case.
pub fn operations(description: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    if let Some(paths) = description["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text, &Default::default()).unwrap()
    }

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target);
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    #[test]
    fn the_description_is_openapi_3_1_and_every_reference_resolves() {
        let description = describe(&config("")).unwrap();
        assert!(description["openapi"].as_str().unwrap().starts_with("3.1."));
        let mut found = Vec::new();
        refs(&description, &mut found);
        assert!(found.len() > 50, "{}", found.len());
        for target in found {
            let pointer = target.strip_prefix('#').unwrap();
            assert!(
                description.pointer(pointer).is_some(),
                "{target} is dangling"
            );
        }
        let mut ids = BTreeSet::new();
        for (method, path) in operations(&description) {
            let operation = &description["paths"][&path][method.to_lowercase()];
            let id = operation["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| ["200", "201", "204", "303"]
                        .iter()
                        .any(|s| r.contains_key(*s))),
                "{method} {path} has no success answer"
            );
        }
    }

    #[test]
    fn it_names_this_server() {
        let plain = describe(&config(r#"issuer = "http://127.0.0.1:9000/kw""#)).unwrap();
        assert_eq!(plain["servers"][0]["url"], "http://127.0.0.1:9000/kw");
        assert_eq!(
            plain["components"]["parameters"]["SessionCookie"]["name"],
            "keyward_session"
        );
        assert!(plain["paths"].get("/auth/challenge").is_some());
        assert_eq!(plain["info"]["version"], env!("CARGO_PKG_VERSION"));

        let https = describe(&config(
            "issuer = \"https://id.example\"\n[pkg_auth]\nenabled = false",
        ))
        .unwrap();
        assert_eq!(https["servers"][0]["url"], "https://id.example");
        assert_eq!(
            https["components"]["parameters"]["SessionCookie"]["name"],
            "__Host-keyward_session"
        );
        assert!(
            operations(&https)
                .iter()
                .all(|(_, path)| !path.starts_with(PKG_PREFIX))
        );
        assert!(https["paths"].get("/token").is_some());
    }

    /// The grant types and error codes the description lists are the ones the server
    /// knows.
    #[test]
    fn its_lists_are_the_servers() {
        let description = describe(&config("")).unwrap();
        let mapping =
            description["components"]["schemas"]["TokenRequest"]["discriminator"]["mapping"]
                .as_object()
                .unwrap();
        let described: BTreeSet<&str> = mapping.keys().map(String::as_str).collect();
        let known: BTreeSet<&str> = keyward_proto::token::GRANT_TYPES.iter().copied().collect();
        assert_eq!(described, known);
        for (grant, target) in mapping {
            let pointer = target.as_str().unwrap().strip_prefix('#').unwrap();
            let branch = description.pointer(pointer).unwrap();
            assert_eq!(branch["properties"]["grant_type"]["const"], grant.as_str());
        }
        let codes =
            description["components"]["schemas"]["OAuthError"]["properties"]["error"]["enum"]
                .as_array()
                .unwrap();
        for code in codes {
            let parsed: keyward_proto::ErrorCode = serde_json::from_value(code.clone()).unwrap();
            assert_eq!(parsed.as_str(), code.as_str().unwrap());
        }
    }
}
