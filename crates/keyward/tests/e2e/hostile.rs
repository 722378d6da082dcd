//! Malformed, oversized and hostile input: every endpoint answers with the right RFC
//! error, never a 500, and the stored data survives.

use reqwest::StatusCode;

use crate::support::*;

#[tokio::test]
async fn token_endpoint_rejects_bad_input_with_rfc_errors() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let url = format!("{}/token", app.issuer);
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            http()
                .post(&url)
                .basic_auth("demo-app", Some(SECRET))
                .body(vec![b'a'; 70 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
        ),
        (
            http()
                .post(&url)
                .basic_auth("demo-app", Some(SECRET))
                .body("grant_type=client_credentials&grant_type=client_credentials"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            http()
                .post(&url)
                .basic_auth("demo-app", Some(SECRET))
                .body(""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            http()
                .post(&url)
                .basic_auth("demo-app", Some(SECRET))
                .body("grant_type=password&username=a&password=b"),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            http()
                .post(&url)
                .basic_auth("demo-app", Some(SECRET))
                .body("grant_type=implicit"),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            http()
                .post(&url)
                .basic_auth("demo-app", Some(SECRET))
                .header("content-type", "application/json")
                .body(r#"{"grant_type":"client_credentials"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            http()
                .post(&url)
                .basic_auth("demo-app", Some(SECRET))
                .body(vec![0xff, 0xfe, b'=', 0x80]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            http()
                .post(&url)
                .header("authorization", "Basic %%%")
                .body("grant_type=client_credentials"),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            http().post(&url).body("grant_type=client_credentials"),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            http()
                .post(&url)
                .basic_auth("demo-app", Some(SECRET))
                .body(format!(
                    "grant_type=client_credentials&client_secret={SECRET}"
                )),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            http()
                .post(&url)
                .basic_auth("x".repeat(5000), Some(SECRET))
                .body("grant_type=client_credentials"),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            http()
                .post(&url)
                .basic_auth("demo-app", Some(SECRET))
                .body("grant_type=authorization_code&code=abc"),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            http()
                .post(&url)
                .basic_auth("demo-app", Some(SECRET))
                .body("grant_type=refresh_token"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            http()
                .post(&url)
                .basic_auth("demo-app", Some(SECRET))
                .body("grant_type=client_credentials&scope=%22bad"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (i, (request, status, error)) in cases.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "case {i}");
        assert_eq!(response.headers()["cache-control"], "no-store", "case {i}");
        let body: serde_json::Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("case {i}: not JSON: {e}"));
        assert_eq!(body["error"], error, "case {i}: {body}");
        assert!(
            !body.to_string().contains(SECRET),
            "case {i}: the secret leaked"
        );
    }
}

#[tokio::test]
async fn bearer_endpoints_answer_rfc6750() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let response = http()
        .get(format!("{}/userinfo", app.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    for token in [
        "garbage",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        &"x".repeat(10_000),
    ] {
        let response = http()
            .get(format!("{}/userinfo", app.issuer))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:.20}");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
    }
    // A client-credentials token has no user: userinfo says insufficient_scope.
    let (_, body) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let response = http()
        .get(format!("{}/userinfo", app.issuer))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    // Introspection of garbage is simply inactive; without client authentication it is refused.
    assert!(!is_active(&app, "garbage").await);
    assert!(!is_active(&app, "a.b.c").await);
    let response = http()
        .post(format!("{}/introspect", app.issuer))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Revocation of an unknown token is a 200 (RFC 7009 §2.2).
    let response = http()
        .post(format!("{}/revoke", app.issuer))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[("token", "unknown")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// A small deterministic generator, so that a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn input(&mut self) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"grant_type=",
            b"authorization_code",
            b"refresh_token",
            b"client_credentials",
            b"code=",
            b"client_id=demo-app",
            b"client_secret=",
            b"token=",
            b"&",
            b"=",
            b"%",
            b"%zz",
            b"%00",
            b"+",
            b"req=",
            b"csrf=",
            b"username=alice",
            b"password=",
            b"decision=approve",
            b"scope=openid",
            b"redirect_uri=",
            b"http://127.0.0.1:5555/callback",
            b"response_type=code",
            b"code_challenge_method=S256",
            b"prompt=none",
            b"max_age=-1",
            b"\xff\xfe",
            b"\"<script>",
            b"id_token_hint=a.b.c",
            b"post_logout_redirect_uri=javascript:alert(1)",
            b"state=",
            b"nonce=",
        ];
        let n = self.next() % 12;
        let mut out = Vec::new();
        for _ in 0..n {
            let piece = PIECES[(self.next() % PIECES.len() as u64) as usize];
            out.extend_from_slice(piece);
        }
        out
    }
}

#[tokio::test]
async fn fuzzed_requests_never_yield_a_server_error() {
    // With an emailed-link connector (links to the log) and a GitHub connector whose
    // server is not there: no input reaches either without a valid login in progress.
    let app = spawn_app(
        Db::Sqlite,
        "[[connectors]]\nid = \"email\"\ntype = \"email\"\n\n[[connectors]]\nid = \"github\"\ntype = \"github\"\nclient_id = \"x\"\nclient_secret = \"y\"\nbase_url = \"http://127.0.0.1:9\"\napi_url = \"http://127.0.0.1:9\"\n",
    )
    .await
    .unwrap();
    let browser = browser();
    // The browser is signed in, so that the account forms see their input.
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    drive(&browser, &url, "alice", PASSWORD, "approve")
        .await
        .callback();
    let mut rng = Lcg(0x5eed);
    let posts = [
        "/token",
        "/introspect",
        "/revoke",
        "/userinfo",
        "/login",
        "/consent",
        "/logout",
        "/authorize",
        "/login/email",
        "/login/github",
        "/login/nope",
        "/callback/email",
        "/account/link/email",
        "/account/link/github",
        "/account/unlink",
        "/account/sessions/end",
        "/account/apps/revoke",
    ];
    let gets = [
        "/authorize",
        "/login",
        "/consent",
        "/logout",
        "/userinfo",
        "/jwks",
        "/.well-known/openid-configuration",
        "/callback/github",
        "/callback/email",
        "/account",
    ];
    for round in 0..300 {
        let input = rng.input();
        let response = if round % 2 == 0 {
            let path = posts[(rng.next() % posts.len() as u64) as usize];
            let mut request = browser
                .post(format!("{}{path}", app.issuer))
                .body(input.clone());
            if rng.next().is_multiple_of(2) {
                request = request.basic_auth("demo-app", Some(SECRET));
            }
            request.send().await.unwrap()
        } else {
            let path = gets[(rng.next() % gets.len() as u64) as usize];
            let query: String = url::form_urlencoded::byte_serialize(&input).collect();
            let query = query.replace("%3D", "=").replace("%26", "&");
            browser
                .get(format!("{}{path}?{query}", app.issuer))
                .send()
                .await
                .unwrap()
        };
        assert!(
            response.status().as_u16() < 500,
            "round {round}: {} for {:?}",
            response.status(),
            String::from_utf8_lossy(&input)
        );
    }
    // The store is intact: a full login and exchange still work.
    let (status, _) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let health = http()
        .get(format!("{}/readyz", app.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn pages_refuse_forged_or_foreign_forms() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let browser = browser();
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    let response = browser.get(&url).send().await.unwrap();
    let login = location(&response);
    let html = browser
        .get(login.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let req = hidden(&html, "req");

    // A wrong CSRF token.
    let form = [
        ("req", req.as_str()),
        ("csrf", "forged"),
        ("username", "alice"),
        ("password", PASSWORD),
    ];
    let response = browser
        .post(format!("{}/login", app.issuer))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Refused as forged, before the password is looked at (a wrong password answers 401).
    let refused = response.text().await.unwrap();
    assert!(refused.contains("stale or forged"), "{refused}");

    // Another browser (no binding cookie) with the right CSRF token.
    let csrf = hidden(&html, "csrf");
    let form = [
        ("req", req.as_str()),
        ("csrf", csrf.as_str()),
        ("username", "alice"),
        ("password", PASSWORD),
    ];
    let response = http()
        .post(format!("{}/login", app.issuer))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("another browser"));

    // The page sets protective headers.
    let response = browser.get(login).send().await.unwrap();
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );

    // The real form still works afterwards.
    let response = browser
        .post(format!("{}/login", app.issuer))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(location(&response).as_str().starts_with(REDIRECT));
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert!(
        cookie.iter().any(|c| c.starts_with("keyward_session=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Lax")),
        "{cookie:?}"
    );
}

#[tokio::test]
async fn operations_endpoints() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    // A wrong method on a protocol endpoint is a JSON error, not an empty body.
    for path in ["/token", "/introspect", "/revoke", "/device/code"] {
        let response = http()
            .get(format!("{}{path}", app.issuer))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{path}");
    }
    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/nope", 404)] {
        let response = http()
            .get(format!("{}{path}", app.issuer))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
    }
    let (status, body) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // This server's own counters (each server has its own registry, so another test's
    // requests cannot satisfy these).
    for (series, value) in [
        (
            r#"keyward_tokens_issued_total{grant_type="client_credentials"}"#,
            1,
        ),
        (
            r#"keyward_http_requests_total{endpoint="/token",status="200"}"#,
            1,
        ),
        (
            r#"keyward_http_requests_total{endpoint="/token",status="405"}"#,
            1,
        ),
        (
            r#"keyward_http_requests_total{endpoint="/healthz",status="200"}"#,
            1,
        ),
        (
            r#"keyward_tokens_issued_total{grant_type="refresh_token"}"#,
            0,
        ),
    ] {
        assert_eq!(metric(&app, series).await, value, "{series}");
    }
    let discovery: serde_json::Value = get_json(&format!(
        "{}/.well-known/oauth-authorization-server",
        app.issuer
    ))
    .await;
    assert_eq!(discovery["issuer"], app.issuer);
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    let jwks: serde_json::Value = get_json(&format!("{}/jwks", app.issuer)).await;
    let algs: Vec<_> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap().to_owned())
        .collect();
    assert!(algs.contains(&"ES256".into()) && algs.contains(&"RS256".into()));
    assert!(
        jwks.to_string().find("\"d\"").is_none(),
        "no private key material"
    );
}

/// Opens a raw TCP connection to `app`.
async fn raw_connection(app: &TestApp) -> tokio::net::TcpStream {
    let addr = app.issuer.trim_start_matches("http://").to_owned();
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// Reads until the server closes the connection (or `limit` passes); returns what it
/// sent and whether it closed.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> (String, bool) {
    use tokio::io::AsyncReadExt as _;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&received).into_owned(), true);
            }
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
        }
    }
}

/// Attack: holding connections open (slowloris). Before the fix a connection that sent
/// its head one byte a second, one that never finished its body, and an idle
/// keep-alive connection all stayed open for good, and enough of them took every file
/// descriptor. Now each is closed after `http_read_timeout` (here 2 s; the body gets
/// 408).
#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt as _;
    let app = spawn_app(Db::Sqlite, "http_read_timeout = \"2s\"")
        .await
        .unwrap();
    let limit = std::time::Duration::from_secs(8);

    // A head trickled in, one byte every half second.
    let mut trickle = raw_connection(&app).await;
    let writer = tokio::spawn(async move {
        let head = b"GET /healthz HTTP/1.1\r\nHost: keyward\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in head {
            if trickle.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        false
    });
    let cut_off = tokio::time::timeout(limit, writer).await;
    assert!(
        matches!(cut_off, Ok(Ok(true))),
        "a head trickled in was still being read after {limit:?}"
    );

    // An idle keep-alive connection after one request.
    let mut idle = raw_connection(&app).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: keyward\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut idle, limit).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle keep-alive connection stayed open");

    // A body that never comes.
    let mut slow_body = raw_connection(&app).await;
    slow_body
        .write_all(
            b"POST /token HTTP/1.1\r\nHost: keyward\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type",
        )
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut slow_body, limit).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("invalid_request"), "{answer}");
}

/// Attack: oversized heads. Before the fix a single 420 KB header was read and handed
/// on. Now a header value over 16 KiB, or a head over 64 KiB in all, is refused with 431
/// before any handler sees it.
#[tokio::test]
async fn oversized_headers_are_refused_with_431() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let url = format!("{}/healthz", app.issuer);
    let one_big = http()
        .get(&url)
        .header("x-big", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(
        one_big.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let mut many = http().get(&url);
    for i in 0..8 {
        many = many.header(format!("x-part-{i}"), "b".repeat(10 * 1024));
    }
    let response = many.send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    // Just under the limits is fine.
    let ok = http()
        .get(&url)
        .header("x-fine", "c".repeat(15 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

/// At `max_connections`, keyward stops accepting instead of running out of file
/// descriptors: a request waits until idle connections are closed, then is answered.
#[tokio::test]
async fn at_the_connection_limit_requests_wait_and_are_served() {
    let app = spawn_app(
        Db::Sqlite,
        "http_read_timeout = \"2s\"\nmax_connections = 16",
    )
    .await
    .unwrap();
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(raw_connection(&app).await);
    }
    let started = std::time::Instant::now();
    let response = http()
        .get(format!("{}/healthz", app.issuer))
        .timeout(std::time::Duration::from_secs(15))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "answered at once: the limit did not hold ({:?})",
        started.elapsed()
    );
    drop(idle);
}

/// `/readyz` checks the database: while PostgreSQL refuses keyward's connections it
/// answers 503 (a load balancer takes the replica out), and once the database is back
/// it answers 200 again without a restart. Tokens are refused meanwhile with a 503
/// `temporarily_unavailable`, not a 500.
#[tokio::test]
async fn readiness_follows_the_database() {
    let Some(app) = spawn_app(Db::Postgres, "").await else {
        return;
    };
    let ready = || async {
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            http().get(format!("{}/readyz", app.issuer)).send(),
        )
        .await
        .expect("/readyz answered within 30 s")
        .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert_eq!(ready().await, (StatusCode::OK, "ready".to_owned()));

    let url = url::Url::parse(&app.state.config().database_url).unwrap();
    let name = url.path().trim_start_matches('/').to_owned();
    let admin = sqlx::PgPool::connect(&std::env::var("KEYWARD_TEST_DATABASE_URL").unwrap())
        .await
        .unwrap();
    let set_allowed = |allowed: bool| {
        let (admin, name) = (admin.clone(), name.clone());
        async move {
            sqlx::raw_sql(&format!(
                "ALTER DATABASE {name} ALLOW_CONNECTIONS {allowed}"
            ))
            .execute(&admin)
            .await
            .unwrap();
            if !allowed {
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                )
                .bind(&name)
                .execute(&admin)
                .await
                .unwrap();
            }
        }
    };
    set_allowed(false).await;
    let (status, body) = ready().await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
    );
    assert_eq!(
        metric(
            &app,
            r#"keyward_http_requests_total{endpoint="/readyz",status="503"}"#
        )
        .await,
        1
    );
    let response = http()
        .post(format!("{}/token", app.issuer))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    // A page says the same in words.
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "5");
    let html = response.text().await.unwrap();
    assert!(html.contains("cannot reach its database"), "{html}");

    set_allowed(true).await;
    assert_eq!(ready().await, (StatusCode::OK, "ready".to_owned()));
    let (status, body) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    admin.close().await;
}

/// A NUL byte, which PostgreSQL cannot store in text, in every kind of input that
/// reaches a database lookup (form and query parameters, Basic credentials, a signed-in
/// browser's forms) is refused as bad input, never a 500, on both databases. Found by
/// Schemathesis (`GET /login?req=%00`).
#[tokio::test]
async fn nul_bytes_are_refused_as_bad_input() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = spawn_app(db, "").await else {
            continue;
        };
        let browser = browser();
        let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
        drive(&browser, &url, "alice", PASSWORD, "approve")
            .await
            .callback();
        let base = &app.issuer;
        let nul_basic =
            |request: reqwest::RequestBuilder| request.basic_auth("demo\0app", Some("x"));
        let requests = [
            browser.get(format!("{base}/login?req=%00")),
            browser.get(format!("{base}/consent?req=a%00b")),
            browser.get(format!("{base}/authorize?client_id=%00&response_type=code")),
            browser.get(format!(
                "{base}/logout?client_id=%00&post_logout_redirect_uri=x"
            )),
            http()
                .post(format!("{base}/token"))
                .body("grant_type=client_credentials&client_id=%00&client_secret=x"),
            nul_basic(http().post(format!("{base}/token"))).body("grant_type=client_credentials"),
            nul_basic(http().post(format!("{base}/introspect"))).body("token=x"),
            http()
                .post(format!("{base}/device/code"))
                .body("client_id=cli%00"),
            http()
                .post(format!("{base}/revoke"))
                .body("client_id=%00&token=x"),
            browser
                .post(format!("{base}/login"))
                .body("req=%00&csrf=x&username=a&password=b"),
            browser
                .post(format!("{base}/account/apps/revoke"))
                .body("csrf=x&client_id=%00"),
        ];
        let mut wrong = Vec::new();
        for request in requests {
            let request = request.build().unwrap();
            let target = format!("{} {}", request.method(), request.url());
            let status = browser.execute(request).await.unwrap().status();
            if !status.is_client_error() {
                wrong.push(format!("{target} answered {status}"));
            }
        }
        assert!(wrong.is_empty(), "{db:?}:\n{}", wrong.join("\n"));
        // Nothing was written: the store still works.
        let (status, _) = token_request(
            &app,
            "demo-app",
            Some(SECRET),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
}
