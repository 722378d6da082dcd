#!/usr/bin/env bash
# Figures for RELIABILITY.md (Backup and restore): `keyward backup` of a live SQLite
# database holding ROWS grants (each with a live refresh token) while CHAINS clients
# rotate their refresh tokens as fast as they can, then kill -9, `keyward restore`, and
# a restart on the backup. Prints the database size, the backup's size and time, the
# rotations that went on during the backup (and how many failed: must be 0), the
# restore's time, and whether an access token and a refresh token handed out before the
# backup work after the restore.
#
#   cargo build --release -p keyward
#   tests/reliability/backup.sh [ROWS] [CHAINS]      # defaults: 200000 grants, 4 chains
#
# KEYWARD names the binary (default target/release/keyward, under CARGO_TARGET_DIR when
# that is set). Needs curl, openssl, jq, sqlite3 and python3 (for a free port).
# Everything happens in a temporary directory.
set -euo pipefail

rows=${1:-200000}
chains=${2:-4}
root=$(cd "$(dirname "$0")/../.." && pwd)
keyward=${KEYWARD:-${CARGO_TARGET_DIR:-$root/target}/release/keyward}
case "$keyward" in /*) ;; *) keyward="$PWD/$keyward" ;; esac
work=$(mktemp -d)
data="$work/data"
cd "$work"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

openssl rand -base64 48 > at-rest.key
export KEYWARD_KEY_ENCRYPTION_KEY_FILE="$work/at-rest.key" KEYWARD_LOG=warn
secret=$(openssl rand -hex 24)
cat > keyward.toml <<EOF
issuer = "http://127.0.0.1:9"
database_url = "sqlite://$data/keyward.db"

[[clients]]
client_id = "demo-app"
client_secret = "$secret"
redirect_uris = ["http://127.0.0.1:5555/callback"]
skip_consent = true

[[users]]
username = "alice"
password = "correct horse battery staple"
EOF

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
serve() {
    KEYWARD_LISTEN="127.0.0.1:$port" "$keyward" --config keyward.toml serve > /dev/null &
    server=$!
    pids+=("$server")
    until curl -sf "$base/readyz" > /dev/null; do sleep 0.1; done
}

# The schema and the configured client and user, then ROWS synthetic grants of alice,
# each with one live refresh token, as a busy deployment holds them.
serve
kill "$server"; wait "$server" || true
now=$(date +%s)
sqlite3 "$data/keyward.db" > /dev/null <<EOF
PRAGMA journal_mode = WAL;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $rows)
INSERT INTO grants (id, client_id, user_id, scope, auth_time, nonce, created_at, expires_at, revoked)
SELECT 'g' || i || '-' || lower(hex(randomblob(8))), 'demo-app', (SELECT id FROM users WHERE username = 'alice'),
       'openid profile offline_access', $now, NULL, $now, $now + 2592000, FALSE FROM n;
INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at, rotated_at)
SELECT lower(hex(randomblob(32))), id, $now, $now + 2592000, NULL FROM grants;
COMMIT;
EOF

serve
# One code flow with PKCE as a browser does it; prints the token response.
sign_in() {
    local jar verifier challenge next page req csrf code
    jar=$(mktemp)
    verifier=$(openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n')
    challenge=$(printf %s "$verifier" | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=\n')
    next=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' \
        "$base/authorize?client_id=demo-app&response_type=code&scope=openid%20offline_access&redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcallback&state=st&code_challenge=$challenge&code_challenge_method=S256")
    page=$(curl -s -c "$jar" -b "$jar" "$base/${next#http://*/}")
    req=$(printf '%s' "$page" | sed -n 's/.*name="req" value="\([^"]*\)".*/\1/p' | head -1)
    csrf=$(printf '%s' "$page" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1)
    next=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' --data-urlencode "req=$req" \
        --data-urlencode "csrf=$csrf" -d username=alice --data-urlencode "password=correct horse battery staple" "$base/login")
    code=$(printf '%s' "$next" | sed -n 's/.*[?&]code=\([^&]*\).*/\1/p')
    curl -sf -u "demo-app:$secret" -d grant_type=authorization_code --data-urlencode "code=$code" \
        --data-urlencode redirect_uri=http://127.0.0.1:5555/callback --data-urlencode "code_verifier=$verifier" "$base/token"
    rm -f "$jar"
}
before=$(sign_in)
access=$(jq -r .access_token <<< "$before")
refresh=$(jq -r .refresh_token <<< "$before")

# CHAINS clients rotating their refresh tokens, one line per rotation (ok or failed).
rotate() {
    local token status
    token=$(jq -r .refresh_token <<< "$(sign_in)")
    while [[ ! -e stop ]]; do
        read -r status took < <(curl -s -o answer.$1 -w '%{http_code} %{time_total}\n' -u "demo-app:$secret" \
            -d grant_type=refresh_token --data-urlencode "refresh_token=$token" "$base/token")
        if [[ "$status" == 200 ]]; then
            token=$(jq -r .refresh_token answer.$1)
            echo "$(date +%s.%N) ok $took"
        else
            echo "$(date +%s.%N) failed $took $status"
        fi
    done > rotations.$1
}
rotators=()
for i in $(seq "$chains"); do rotate "$i" & rotators+=($!); pids+=($!); done
sleep 2

db_bytes=$(cat "$data"/keyward.db* | wc -c)
start=$(date +%s.%N)
"$keyward" --config keyward.toml backup backup.db | tee backup.out
end=$(date +%s.%N)
sleep 1
touch stop
wait "${rotators[@]}"
# A rotation counts as during the backup when its answer came while the command ran.
during=$(cat rotations.* | awk -v s="$start" -v e="$end" '$1 >= s && $1 <= e && $2 == "ok"' | wc -l)
slowest=$(cat rotations.* | awk -v s="$start" -v e="$end" '$1 >= s && $1 - $3 <= e { if ($3 > m) m = $3 } END { printf "%.0f", m * 1000 }')
median=$(cat rotations.* | awk -v s="$start" -v e="$end" '$1 < s || $1 - $3 > e { print $3 }' | sort -n |
    awk '{ v[NR] = $1 } END { printf "%.0f", v[int((NR + 1) / 2)] * 1000 }')
failed=$(cat rotations.* | grep -c failed || true)
total=$(cat rotations.* | grep -c ' ok ' || true)

kill -9 "$server"; wait "$server" 2>/dev/null || true
rstart=$(date +%s.%N)
"$keyward" --config keyward.toml restore backup.db | tee restore.out
rend=$(date +%s.%N)
serve
userinfo=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $access" "$base/userinfo")
refreshed=$(curl -s -o /dev/null -w '%{http_code}' -u "demo-app:$secret" -d grant_type=refresh_token \
    --data-urlencode "refresh_token=$refresh" "$base/token")
kill "$server"; wait "$server" 2>/dev/null || true

echo
echo "date:                   $(date -u +%F)"
echo "live database:          $db_bytes bytes (file + WAL), $rows synthetic grants + refresh tokens"
echo "backup:                 $(stat -c %s backup.db) bytes, $(awk "BEGIN { print $end - $start }") s for the command"
echo "rotations meanwhile:    $during answered during the backup, $total in all, $failed failed ($chains chains)"
echo "rotation latency:       slowest overlapping the backup $slowest ms; median outside it $median ms"
echo "restore:                $(awk "BEGIN { print $rend - $rstart }") s"
echo "after the restore:      userinfo with an access token from before the backup: $userinfo; its refresh token: $refreshed"
[[ "$failed" == 0 && "$userinfo" == 200 && "$refreshed" == 200 ]]
