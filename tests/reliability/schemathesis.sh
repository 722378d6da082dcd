#!/usr/bin/env bash
# Hostile input from keyward's own description: Schemathesis (from PyPI, pinned) reads
# /openapi.json from a live release `keyward serve` and sends generated requests to
# every operation, valid and invalid, for SECONDS (default 300). It fails on any
# answer >= 500 and on any answer the description does not allow (status, content
# type, body schema).
#
#   tests/reliability/schemathesis.sh [SECONDS] [sqlite|postgres]
#
# The server runs on 127.0.0.1 port 0 (found in the address `serve` announces) with a
# fresh SQLite database, or with `postgres` a fresh database on the server
# KEYWARD_TEST_DATABASE_URL names; its issuer has a path (/kw), so that nesting is
# exercised; the Julia protocol is on; one client may use every grant. A user signs in
# first (authorization code with PKCE), so that Schemathesis holds real credentials:
# the client's Basic secret (clientSecretBasic), the user's access token (accessToken)
# and refresh token (refreshToken), and an admin client's client-credentials token
# (adminToken, for /admin/api/), as the description's security schemes name them.
# Besides Schemathesis' verdict, the server's own counters must show no 5xx, its log no
# panic, and the process must still be alive.
#
# Environment: KEYWARD_BIN (default: cargo build --release, then target/release/keyward);
# SCHEMATHESIS_VENV (default: $CARGO_TARGET_DIR or target, /schemathesis-<version>);
# SCHEMATHESIS_SEED (a seed to replay a run); SCHEMATHESIS_REPORT (directory to keep the
# JUnit and NDJSON reports in).
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds="${1:-300}"
backend="${2:-sqlite}"
version="4.32.5"
target="${CARGO_TARGET_DIR:-$PWD/target}"
venv="${SCHEMATHESIS_VENV:-$target/schemathesis-$version}"

python="$(command -v python3.11 || command -v python3)"
if [ ! -x "$venv/bin/schemathesis" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

bin="${KEYWARD_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --quiet -p keyward
  bin="$target/release/keyward"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/keyward-schemathesis.XXXXXX")"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
  if [ -n "${name:-}" ]; then psql "$admin_url" -qc "DROP DATABASE IF EXISTS $name" || true; fi
}
trap cleanup EXIT

mkdir -p "$work/data"
case "$backend" in
  sqlite) database_url="sqlite://$work/data/keyward.db" ;;
  postgres)
    admin_url="${KEYWARD_TEST_DATABASE_URL:?postgres needs KEYWARD_TEST_DATABASE_URL}"
    name="keyward_e2e_schemathesis_$("$python" -c 'import secrets; print(secrets.token_hex(6))')"
    psql "$admin_url" -qc "CREATE DATABASE $name"
    database_url="${admin_url%/*}/$name"
    ;;
  *) echo "usage: $0 [SECONDS] [sqlite|postgres]" >&2; exit 2 ;;
esac

secret="$("$python" -c 'import secrets; print(secrets.token_urlsafe(32))')"
password="$("$python" -c 'import secrets; print(secrets.token_urlsafe(18))')"
cat >"$work/keyward.toml" <<TOML
issuer = "http://127.0.0.1:0/kw"
listen = "127.0.0.1:0"
database_url = "$database_url"
# One address sends everything: creation limits would answer most requests 429.
unauthenticated_writes_per_minute = 4000000000

[pkg_auth]
enabled = true

[[clients]]
client_id = "fuzz"
client_secret = "$secret"
redirect_uris = ["http://127.0.0.1:9/callback"]
post_logout_redirect_uris = ["http://127.0.0.1:9/bye"]
grant_types = ["authorization_code", "refresh_token", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code", "urn:ietf:params:oauth:grant-type:token-exchange"]
scopes = ["openid", "profile", "email", "groups", "offline_access", "api:read"]
skip_consent = true
introspect = true

[[clients]]
client_id = "fuzz-admin"
client_secret = "$secret"
grant_types = ["client_credentials"]
scopes = ["keyward:admin"]

[[users]]
username = "fuzz"
email = "fuzz@example.org"
name = "Fuzz Tester"
password = "$password"
TOML

RUST_LOG="${RUST_LOG:-warn}" "$bin" --config "$work/keyward.toml" serve >"$work/server.out" 2>"$work/server.err" &
server=$!
port=""
for _ in $(seq 1 300); do
  port="$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$work/server.out" | head -n 1)"
  [ -n "$port" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.err" >&2; echo "keyward exited" >&2; exit 1; }
  sleep 0.2
done
[ -n "$port" ] || { echo "keyward did not announce its address within a minute" >&2; exit 1; }
base="http://127.0.0.1:$port/kw"
echo "keyward at $base (log: $work/server.err)"

# The user signs in once: authorization code with PKCE, through the login page.
tokens="$(BASE="$base" SECRET="$secret" PASSWORD="$password" "$python" - <<'PY'
import base64, hashlib, http.cookiejar, json, os, re, secrets, urllib.error, urllib.parse, urllib.request

base, secret, password = os.environ["BASE"], os.environ["SECRET"], os.environ["PASSWORD"]
redirect = "http://127.0.0.1:9/callback"

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect)

def call(url, data=None, headers=None):
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        response = opener.open(request)
    except urllib.error.HTTPError as e:
        response = e
    return response.status, response.headers, response.read().decode()

verifier = secrets.token_urlsafe(48)
challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
query = urllib.parse.urlencode({"client_id": "fuzz", "response_type": "code", "redirect_uri": redirect,
    "scope": "openid profile email groups offline_access", "code_challenge": challenge, "code_challenge_method": "S256"})
status, headers, _ = call(f"{base}/authorize?{query}")
assert status == 303, status
login = urllib.parse.urljoin(base, headers["Location"])
status, _, page = call(login)
assert status == 200, status
field = lambda name: re.search(f'name="{name}" value="([^"]*)"', page).group(1)
status, headers, _ = call(f"{base}/login", {"req": field("req"), "csrf": field("csrf"), "username": "fuzz", "password": password})
assert status == 303, status
code = urllib.parse.parse_qs(urllib.parse.urlparse(headers["Location"]).query)["code"][0]
basic = base64.b64encode(f"fuzz:{secret}".encode()).decode()
status, _, body = call(f"{base}/token", {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
    "code_verifier": verifier}, {"Authorization": f"Basic {basic}"})
assert status == 200, (status, body)
answer = json.loads(body)
admin_basic = base64.b64encode(f"fuzz-admin:{secret}".encode()).decode()
status, _, body = call(f"{base}/token", {"grant_type": "client_credentials", "scope": "keyward:admin"},
    {"Authorization": f"Basic {admin_basic}"})
assert status == 200, (status, body)
print(answer["access_token"], answer["refresh_token"], json.loads(body)["access_token"])
PY
)"
read -r access refresh admin <<<"$tokens"

cat >"$work/schemathesis.toml" <<TOML
[auth.openapi.clientSecretBasic]
username = "fuzz"
password = "$secret"

[auth.openapi.accessToken]
bearer = "$access"

[auth.openapi.refreshToken]
bearer = "$refresh"

[auth.openapi.adminToken]
bearer = "$admin"
TOML

# Pages and the Julia token file are checked too: as UTF-8 text (what the description's
# string schemas say), the token file also as TOML.
cat >"$work/keyward_hooks.py" <<'PY'
import tomllib

import schemathesis


@schemathesis.deserializer("text/html")
def html(ctx, response):
    return response.content.decode("utf-8")


@schemathesis.deserializer("application/toml")
def toml(ctx, response):
    text = response.content.decode("utf-8")
    tomllib.loads(text)
    return text
PY

report="${SCHEMATHESIS_REPORT:-$work/report}"
seed_args=()
if [ -n "${SCHEMATHESIS_SEED:-}" ]; then seed_args=(--seed "$SCHEMATHESIS_SEED"); fi
started="$(date +%s)"
status=0
# From the scratch directory, where Schemathesis keeps its cache of past failures.
(cd "$work" && PYTHONPATH="$work" SCHEMATHESIS_HOOKS=keyward_hooks \
"$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
  --url "$base" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-time "$seconds" \
  --request-timeout 30 \
  --max-redirects 0 \
  --continue-on-failure \
  --report junit,ndjson --report-dir "$report" \
  --output-sanitize true \
  "${seed_args[@]}") || status=$?
finished="$(date +%s)"

# The server's own count, independent of Schemathesis: requests answered, and 5xx.
metrics="$(curl -fsS "$base/metrics")"
requests="$(printf '%s\n' "$metrics" | awk '/^keyward_http_requests_total/ {s += $NF} END {print s + 0}')"
errors="$(printf '%s\n' "$metrics" | awk '/^keyward_http_requests_total.*status="5/ {s += $NF} END {print s + 0}')"
panics="$(grep -c 'panicked' "$work/server.err" || true)"
echo "schemathesis $version on $backend: $((finished - started)) s, keyward answered $requests requests, $errors with 5xx, $panics panics; schemathesis exit $status"
if ! kill -0 "$server" 2>/dev/null; then
  echo "keyward died during the run" >&2
  cat "$work/server.err" >&2
  exit 1
fi
if [ "$errors" -ne 0 ] || [ "$panics" -ne 0 ]; then
  grep -i 'error\|panicked' "$work/server.err" | tail -n 20 >&2
  exit 1
fi
exit "$status"
