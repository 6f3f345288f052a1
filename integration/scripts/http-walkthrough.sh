#!/usr/bin/env bash
# One scripted session with etcd's HTTP/JSON gateway, using nothing but curl,
# printed as a transcript that is the same for any etcd-compatible server, so
# that two transcripts can be compared byte for byte: etcd's against cairn's.
#
#   ENDPOINT=127.0.0.1:2379 http-walkthrough.sh
#
# The store must be fresh (revision 1): the transcript shows revisions.
#
# Each step prints `### POST <path> <body>`, the HTTP status, then the answer
# (for a stream, its first lines). What legitimately differs between servers
# and runs is replaced by placeholders: cluster, member and lease IDs (leases
# numbered in order of appearance, also inside lock and election keys), raft
# terms and indexes, versions, database sizes, member names and URLs, a lease's
# remaining TTL, and the wording of a JSON parse error. Revisions,
# keys, values, counts, flags, error codes and etcd's error messages are kept
# exactly.
set -uo pipefail

: "${ENDPOINT:?ENDPOINT must be the server address, host:port}"
base="http://${ENDPOINT}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
raw="$work/raw"
: >"$raw"

# step PATH BODY [LABEL]: a unary call. LABEL stands for a body too long to print.
step() {
    local path="$1" body="$2" label="${3:-$2}"
    printf '### POST %s %s\n' "$path" "$label" >>"$raw"
    printf '%s' "$body" >"$work/body"
    local status
    status="$(curl -sS -o "$work/out" -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' --data-binary @"$work/body" "$base$path")"
    printf '[%s]\n' "$status" >>"$raw"
    cat "$work/out" >>"$raw"
    printf '\n' >>"$raw"
}

# stream PATH BODY LINES: a streamed call, cut off after its first LINES lines.
stream() {
    local path="$1" body="$2" lines="$3"
    printf '### POST %s %s (first %s lines)\n' "$path" "$body" "$lines" >>"$raw"
    : >"$work/stream"
    curl -sS -N -D "$work/stream-headers" -X POST -H 'Content-Type: application/json' \
        --data-binary "$body" "$base$path" >"$work/stream" 2>/dev/null &
    local pid=$!
    for _ in $(seq 100); do
        [ "$(wc -l <"$work/stream")" -ge "$lines" ] && break
        sleep 0.1
    done
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    printf '[%s]\n' "$(sed -nE '1s#^HTTP/[0-9.]+ ([0-9]+).*#\1#p' "$work/stream-headers" | tr -d '\r')" >>"$raw"
    head -n "$lines" "$work/stream" >>"$raw"
}

# Keys and values in base64: foo Zm9v, foo1 Zm9vMQ==, foo2 Zm9vMg==, foo+1 Zm9w,
# bar YmFy, baz YmF6, qux cXV4, v1 djE=, v2 djI=, leased bGVhc2Vk.
step /v3/kv/put '{"key":"Zm9v","value":"YmFy"}'
step /v3/kv/put '{"key":"Zm9vMQ==","value":"djE="}'
step /v3/kv/put '{"key":"Zm9vMg==","value":"djI="}'
step /v3/kv/put '{"key":"Zm9v","value":"YmF6","prev_kv":true}'
step /v3/kv/range '{"key":"Zm9v"}'
step /v3/kv/range '{"key":"Zm9v","range_end":"Zm9vMg=="}'
step /v3/kv/range '{"key":"Zm9v","range_end":"Zm9w"}'
step /v3/kv/range '{"key":"Zm9v","range_end":"Zm9w","limit":2}'
step /v3/kv/range '{"key":"Zm9v","range_end":"Zm9w","keys_only":true}'
step /v3/kv/range '{"key":"Zm9v","range_end":"Zm9w","count_only":true}'
step /v3/kv/range '{"key":"Zm9v","range_end":"Zm9w","sort_order":"DESCEND","sort_target":"MOD"}'
step /v3/kv/range '{"key":"Zm9v","revision":"2"}'
step /v3/kv/range '{"key":"AA==","range_end":"AA==","limit":"10"}'
# etcd 3.4 serves every path under /v3beta too.
step /v3beta/kv/range '{"key":"Zm9vMQ=="}'
step /v3/kv/txn '{"compare":[{"key":"Zm9v","target":"VALUE","result":"EQUAL","value":"YmF6"}],"success":[{"request_put":{"key":"Zm9v","value":"cXV4"}},{"request_range":{"key":"Zm9v"}}],"failure":[{"request_range":{"key":"Zm9vMQ=="}}]}'
step /v3/kv/txn '{"compare":[{"key":"Zm9v","target":"VERSION","result":"GREATER","version":"10"}],"success":[{"request_delete_range":{"key":"Zm9v"}}],"failure":[{"requestRange":{"key":"Zm9vMQ=="}}]}'
step /v3/kv/deleterange '{"key":"Zm9vMQ==","prev_kv":true}'

step /v3/lease/grant '{"TTL":"60"}'
lease="$(sed -nE 's/.*"ID":"([0-9]+)".*/\1/p' "$work/out")"
step /v3/kv/put "{\"key\":\"bGVhc2Vk\",\"value\":\"djE=\",\"lease\":\"$lease\"}"
step /v3/lease/timetolive "{\"ID\":\"$lease\",\"keys\":true}"
step /v3/lease/leases '{}'
stream /v3/lease/keepalive "{\"ID\":\"$lease\"}" 1
step /v3/lease/revoke "{\"ID\":$lease}"
step /v3/kv/range '{"key":"bGVhc2Vk"}'
step /v3/kv/lease/timetolive "{\"ID\":\"$lease\"}"

stream /v3/watch '{"create_request":{"key":"Zm9v","range_end":"Zm9w","start_revision":"2","prev_kv":true}}' 2

step /v3/kv/compaction '{"revision":"4"}'
step /v3/kv/range '{"key":"Zm9v","revision":"3"}'
step /v3/kv/range '{"key":"Zm9v","revision":"4"}'

# Lock and election, each on a lease of its own.
step /v3/lease/grant '{"TTL":"60"}'
holder="$(sed -nE 's/.*"ID":"([0-9]+)".*/\1/p' "$work/out")"
step /v3/lock/lock "{\"name\":\"bXlsb2Nr\",\"lease\":\"$holder\"}"
lock_key="$(sed -nE 's/.*"key":"([^"]+)".*/\1/p' "$work/out")"
step /v3/kv/range '{"key":"bXlsb2NrLw==","range_end":"bXlsb2NrMA==","keys_only":true}'
step /v3/lock/unlock "{\"key\":\"$lock_key\"}"
step /v3/election/leader '{"name":"bXllbGVjdGlvbg=="}'
step /v3/election/campaign "{\"name\":\"bXllbGVjdGlvbg==\",\"lease\":\"$holder\",\"value\":\"djE=\"}"
leader="$(sed -nE 's/.*"leader":(\{[^}]*\}).*/\1/p' "$work/out")"
step /v3/election/proclaim "{\"leader\":$leader,\"value\":\"djI=\"}"
step /v3/election/leader '{"name":"bXllbGVjdGlvbg=="}'
stream /v3/election/observe '{"name":"bXllbGVjdGlvbg=="}' 1
step /v3/election/resign "{\"leader\":$leader}"
step /v3/election/proclaim "{\"leader\":$leader,\"value\":\"djE=\"}"
step /v3/election/proclaim '{"value":"djE="}'

# Errors.
step /v3/kv/put '{"key":"","value":"djE="}'
step /v3/kv/range '{"key":"Zm9v","revision":"1000"}'
step /v3/kv/txn '{"success":[{"request_put":{"key":"Zm9v","value":"djE="}},{"request_put":{"key":"Zm9v","value":"djI="}}]}'
step /v3/kv/put '{"key":"Zm9v","value":"djE=","lease":"12345"}'
step /v3/lease/revoke '{"ID":"12345"}'
step /v3/kv/range '{"key":'
sed -i -E '$s/"(error|message)":"[^"]*"/"\1":"<PARSE_ERROR>"/g' "$raw"
big="$(head -c 1700000 /dev/zero | base64 -w0)"
step /v3/kv/put "{\"key\":\"Zm9v\",\"value\":\"$big\"}" '{"key":"Zm9v","value":<1,700,000 bytes>}'
step /v3/no/such/path '{}'

step /v3/maintenance/status '{}'
step /v3/cluster/member/list '{}'

python3 - "$raw" <<'PY'
import base64, json, re, sys

leases = {}
def lease(value):
    number = leases.setdefault(str(value), len(leases) + 1)
    return f"<LEASE_{number}>"

def lease_in_key(text):
    # A lock or election key: <name>/<lease in hex>.
    try:
        key = base64.b64decode(text).decode()
    except Exception:
        return text
    found = re.fullmatch(r"(.*/)([0-9a-f]{8,16})", key)
    if not found:
        return text
    return f"<base64 {found.group(1)}{lease(int(found.group(2), 16))}>"

# What Status and MemberList say of each server's own make-up.
PLACEHOLDERS = {
    None: {"version", "dbSize", "dbSizeInUse", "leader", "raftIndex", "raftTerm",
           "raftAppliedIndex"},
    "members": {"name", "peerURLs", "clientURLs"},
}

def normalize(value, parent=None):
    if isinstance(value, list):
        return [normalize(item, parent) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key == "header":
            item = {k: (f"<{k}>" if k in ("cluster_id", "member_id", "raft_term") else v)
                    for k, v in item.items()}
        elif key in ("ID", "lease") and parent != "members" and isinstance(item, (str, int)):
            item = lease(item) if str(item) != "0" else item
        elif key == "ID" and parent == "members":
            item = "<MEMBER_ID>"
        elif key == "TTL" and "grantedTTL" in value:
            item = "<TTL>"
        elif key == "key" and isinstance(item, str):
            item = lease_in_key(item)
        elif key in PLACEHOLDERS.get(parent, ()) and not isinstance(item, dict):
            item = f"<{key}>"
        else:
            item = normalize(item, key)
        out[key] = item
    return out

def compact(value):
    return json.dumps(normalize(value), separators=(",", ":"))

with open(sys.argv[1]) as raw:
    for line in raw.read().splitlines():
        step = re.fullmatch(r"(### POST \S+ )(\{.*\})( \(first \d+ lines\))?", line)
        if step:
            try:
                body = compact(json.loads(step.group(2)))
            except ValueError:
                body = step.group(2)
            print(step.group(1) + body + (step.group(3) or ""))
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            print(line)
            continue
        print(compact(parsed))
PY
