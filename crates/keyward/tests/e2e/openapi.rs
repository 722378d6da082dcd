//! `/openapi.json` on a live server: a valid-looking OpenAPI 3.1 document naming this
//! issuer, served under the issuer's path; and every operation it describes, sent
//! bare (no parameters, no body, no credentials), is answered with a status and
//! content type the document lists for it. (Schemathesis goes further, from
//! `tests/reliability/schemathesis.sh`.)

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

/// The description a server serves, checked for the shape every OpenAPI 3.1 document
/// has.
async fn fetch_description(issuer: &str) -> Value {
    let response = http()
        .get(format!("{issuer}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let description: Value = response.json().await.unwrap();
    assert!(description["openapi"].as_str().unwrap().starts_with("3.1."));
    assert_eq!(description["info"]["title"], "keyward");
    assert_eq!(description["servers"][0]["url"], issuer);
    assert!(description["components"]["securitySchemes"]["clientSecretBasic"].is_object());
    description
}

#[tokio::test]
async fn the_live_server_describes_itself_and_answers_as_described() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let description = fetch_description(&app.issuer).await;
    let paths = description["paths"].as_object().unwrap();
    for path in ["/token", "/authorize", "/auth/claimtoken", "/openapi.json"] {
        assert!(paths.contains_key(path), "{path} is not described");
    }
    let mut checked = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let path_filled = path
                .replace("{connector}", "nope")
                .replace("{username}", "nope")
                .replace("{client_id}", "nope");
            let url = format!("{}{}", app.issuer, path_filled);
            let request = match method.as_str() {
                "get" => http().get(&url),
                "post" => http().post(&url),
                "patch" => http().patch(&url),
                "delete" => http().delete(&url),
                other => panic!("{other} {path}: keyward serves GET, POST, PATCH and DELETE only"),
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16().to_string();
            let documented = &operation["responses"][&status];
            assert!(
                documented.is_object(),
                "{method} {path} answered {status}, which the description does not list"
            );
            let documented = match documented["$ref"].as_str() {
                Some(target) => description.pointer(&target[1..]).unwrap(),
                None => documented,
            };
            if let Some(content) = documented["content"].as_object() {
                let content_type = response.headers()["content-type"].to_str().unwrap();
                let media = content_type.split(';').next().unwrap().trim();
                assert!(
                    content.contains_key(media),
                    "{method} {path} answered {status} as {media}, not as described"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 35, "only {checked} operations");
}

#[tokio::test]
async fn the_description_follows_the_issuer_path() {
    let app = spawn_app_under("/kw", "").await;
    assert!(app.issuer.ends_with("/kw"));
    fetch_description(&app.issuer).await;
    let origin = app.issuer.trim_end_matches("/kw");
    let outside = http()
        .get(format!("{origin}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), StatusCode::NOT_FOUND);

    // Without the Julia protocol, its paths are neither served nor described.
    let app = spawn_app(Db::Sqlite, "[pkg_auth]\nenabled = false")
        .await
        .unwrap();
    let description = fetch_description(&app.issuer).await;
    assert!(description["paths"].get("/auth/challenge").is_none());
    let status = http()
        .post(format!("{}/auth/challenge", app.issuer))
        .body("abc")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NOT_FOUND);
}
