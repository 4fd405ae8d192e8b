#!/usr/bin/env bash
# selftest.sh -- quick check of mock-api.js with curl (loopback only).
# usage: test/mock/selftest.sh [--http2] [--bench]
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
node=${NODE:-$(command -v node || echo /usr/bin/node)}
h2=; bench=
for a in "$@"; do
    case $a in
        --http2) h2=--http2 ;;
        --bench) bench=1 ;;
    esac
done

work=$(mktemp -d)
"$here/make-certs.sh" "$work/certs" || exit 1
ca=$work/certs/ca.pem

coproc MOCK { exec "$node" "$here/mock-api.js" --cert "$work/certs/server.pem" \
    --key "$work/certs/server.key" --keys k1,k2 --exit-on-stdin-eof --max-lifetime-s 300 $h2 \
    2>"$work/mock.log"; }
mockpid=$MOCK_PID
cleanup() { kill "$mockpid" 2>/dev/null; wait "$mockpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
read -r -t 20 ready <&"${MOCK[0]}" || { echo "mock did not start"; cat "$work/mock.log"; exit 1; }
port=$(sed -E 's/.*"port":([0-9]+).*/\1/' <<<"$ready")
cport=$(sed -E 's/.*"control_port":([0-9]+).*/\1/' <<<"$ready")
base=https://127.0.0.1:$port
ctl=http://127.0.0.1:$cport
export no_proxy='*' NO_PROXY='*'

fails=0; checks=0
ok() { checks=$((checks + 1)); echo "ok $checks - $1"; }
notok() { checks=$((checks + 1)); fails=$((fails + 1)); echo "not ok $checks - $1"; echo "#   got: ${2:0:400}"; }
# expect DESC GOT REGEX
expect() { if [[ $2 =~ $3 ]]; then ok "$1"; else notok "$1" "$2"; fi; }

httpv=(--http1.1)
[ -n "$h2" ] && httpv=(--http2)
# api PATH [curl args...]: prints "STATUS BODY"
api() {
    local path=$1; shift
    curl -sS "${httpv[@]}" --cacert "$ca" -o "$work/body" -w '%{http_code}' "$@" "$base$path" >"$work/code" 2>"$work/curlerr"
    echo "$(cat "$work/code") $(cat "$work/body" 2>/dev/null)"
}
H=(-H 'x-api-key: k1' -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json')
msg() { api /v1/messages "${H[@]}" --data-binary "$1" "${@:2}"; }
req() { printf '{"model":"claude-sonnet-4-6","max_tokens":16,"messages":[{"role":"user","content":"%s"}]}' "$1"; }
ctlpost() { curl -sS -X "${3:-POST}" -H 'content-type: application/json' --data-binary "${2:-}" "$ctl$1"; }

# --- basics
r=$(msg '{"model":"claude-sonnet-4-6","max_tokens":16,"messages":[{"role":"user","content":"hello \"world\" \\ \u0001 \ud83d\ude00 \u00e9"}]}')
expect "echo reply" "$r" '^200 .*"content":\[\{"type":"text","text":"hello \\"world\\" \\\\ \\u0001 😀 é"\}\]'
expect "usage" "$r" '"usage":\{"input_tokens":[0-9]+,"output_tokens":[0-9]+\}'
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(req hi)"); expect "request-id header" "$r" 'request-id: req_mock_[0-9]+'
r=$(msg '{"model":"m","max_tokens":5,"system":[{"type":"text","text":"sys"}],"messages":[{"role":"user","content":[{"type":"text","text":"ab"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},{"type":"text","text":"cd"}]},{"role":"assistant","content":"x"}]}')
expect "block concat" "$r" '^200 .*"text":"abcd"'
r=$(api /v1/messages -H 'x-api-key: nope' -H 'anthropic-version: 2023-06-01' --data-binary "$(req hi)")
expect "401 wrong key" "$r" '^401 \{"type":"error","error":\{"type":"authentication_error"'
r=$(api /v1/messages -H 'anthropic-version: 2023-06-01' --data-binary "$(req hi)"); expect "401 no key" "$r" '^401 '
r=$(api /v1/messages -H 'x-api-key: k1' --data-binary "$(req hi)"); expect "400 no version" "$r" '^400 .*invalid_request_error'
for bad in '{' '{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}' \
    '{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}' \
    '{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"x"}]}' \
    '{"model":"m","max_tokens":5,"messages":[]}' \
    '{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}' \
    '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":5}]}' \
    '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"text":"x"}]}]}' \
    '{"model":"m","max_tokens":5,"temperature":1.5,"messages":[{"role":"user","content":"x"}]}' \
    '{"model":"m","max_tokens":5,"system":5,"messages":[{"role":"user","content":"x"}]}' \
    '{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"x"}]}'; do
    r=$(msg "$bad"); expect "400 for $bad" "$r" '^400 \{"type":"error","error":\{"type":"invalid_request_error","message":'
done
r=$(api /v1/messages/count_tokens "${H[@]}" --data-binary '{"model":"m","messages":[{"role":"user","content":"12345678"}]}')
expect "count_tokens" "$r" '^200 \{"input_tokens":2\}'
r=$(api '/v1/models?limit=2' "${H[@]}"); expect "models page 1" "$r" '^200 .*"has_more":true,"first_id":"claude-sonnet-4-6","last_id":"claude-opus-4-5"'
r=$(api '/v1/models?limit=10&after_id=claude-opus-4-5' "${H[@]}"); expect "models page 2" "$r" '^200 .*"has_more":false,"first_id":"claude-haiku-4-5","last_id":"claude-opus-4-1"'
ctlpost /config '{"models_page_size":1}' >/dev/null
r=$(api '/v1/models?limit=1000' "${H[@]}"); expect "models_page_size caps a page" "$r" '^200 .*"has_more":true,"first_id":"claude-sonnet-4-6","last_id":"claude-sonnet-4-6"'
ctlpost /config '{"models_page_size":null}' >/dev/null

# --- tools, images, prompt caching
T='"tools":[{"name":"pick","input_schema":{"type":"object","properties":{"label":{"type":"string","enum":["bug","question"]},"n":{"type":"integer"}},"required":["label"]}}]'
r=$(msg '{"model":"m","max_tokens":50,'"$T"',"tool_choice":{"type":"tool","name":"pick"},"messages":[{"role":"user","content":"a question"}]}')
expect "forced tool: tool_use with the enum value the text names" "$r" '^200 .*"content":\[\{"type":"tool_use","id":"toolu_mock_[0-9]+","name":"pick","input":\{"label":"question","n":10\}\}\],"stop_reason":"tool_use"'
r=$(msg '{"model":"m","max_tokens":50,'"$T"',"tool_choice":{"type":"tool","name":"pick"},"messages":[{"role":"user","content":"[[mock:no_tool]] text"}]}')
expect "[[mock:no_tool]]: a text reply instead" "$r" '^200 .*"stop_reason":"end_turn"'
r=$(msg '{"model":"m","max_tokens":50,'"$T"',"tool_choice":{"type":"tool","name":"other"},"messages":[{"role":"user","content":"x"}]}')
expect "tool_choice naming no tool: 400" "$r" '^400 .*tool_choice.name'
r=$(msg '{"model":"m","max_tokens":50,"tools":[{"name":"t","input_schema":{"type":"string"}}],"messages":[{"role":"user","content":"x"}]}')
expect "input_schema not an object: 400" "$r" '^400 .*input_schema.type'
r=$(msg '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/bmp","data":"AAAA"}}]}]}')
expect "unsupported image type: 400" "$r" '^400 .*media_type'
S='"system":[{"type":"text","text":"'"$(printf 'long shared instructions %.0s' {1..20})"'","cache_control":{"type":"ephemeral"}}]'
r=$(msg '{"model":"m","max_tokens":5,'"$S"',"messages":[{"role":"user","content":"row 1"}]}')
expect "cache_control: the first request writes the prefix" "$r" '"cache_creation_input_tokens":[1-9][0-9]*,"cache_read_input_tokens":0'
r=$(msg '{"model":"m","max_tokens":5,'"$S"',"messages":[{"role":"user","content":"row 2"}]}')
expect "cache_control: the next one reads it" "$r" '"cache_creation_input_tokens":0,"cache_read_input_tokens":[1-9]'
r=$(msg '{"model":"m","max_tokens":5,"system":[{"type":"text","text":"x","cache_control":{"type":"forever"}}],"messages":[{"role":"user","content":"y"}]}')
expect "bad cache_control: 400" "$r" '^400 .*cache_control'

r=$(api /v1/nope "${H[@]}"); expect "404" "$r" '^404 .*not_found_error'

# --- directives
t0=$(date +%s%N); r=$(msg "$(req 'x [[mock:delay=300]]')"); t1=$(date +%s%N)
expect "delay directive" "$(( (t1 - t0) / 1000000 )) $r" '^(3[0-9][0-9]|[4-9][0-9][0-9]) 200 '
for s in 429:rate_limit_error 529:overloaded_error 500:api_error 400:invalid_request_error 401:authentication_error 403:permission_error 404:not_found_error 413:request_too_large; do
    r=$(msg "$(req "[[mock:status=${s%%:*}]]")"); expect "status directive $s" "$r" "^${s%%:*} .*\"type\":\"${s#*:}\""
done
r=$(msg "$(req '[[mock:malformed]]')"); expect "malformed directive" "$r" '^200 \{"id": "msg_broken", "content": \[$'
r=$(msg "$(req '[[mock:reset]]')"); expect "reset directive" "$r $(cat "$work/curlerr")" 'reset|Recv failure|56|SSL'
r=$(msg "$(req '[[mock:truncate]]')"); expect "truncate directive" "$r $(cat "$work/curlerr")" '(transfer closed|18|56|92|PROTOCOL)'
r=$(msg "$(req '[[mock:hang]]')" --max-time 1); expect "hang directive" "$r $(cat "$work/curlerr")" 'timed out|28'

# --- faults
ctlpost /faults '[{"status":529,"count":2,"retry_after":"3","should_retry":true,"headers":{"X-Extra":"y"}},{"body":"raw!","status":202},{"malformed":true},{"delay_ms":200}]' >/dev/null
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(req hi)"); expect "fault 529 #1 headers" "$r" 'retry-after: 3.*x-should-retry: true.*x-extra: y|x-extra: y.*retry-after: 3'
r=$(msg "$(req hi)"); expect "fault 529 #2" "$r" '^529 .*overloaded_error'
r=$(msg "$(req hi)"); expect "fault raw body" "$r" '^202 raw!$'
r=$(msg "$(req hi)"); expect "fault malformed" "$r" '^200 \{"id": "msg_broken"'
t0=$(date +%s%N); r=$(msg "$(req hi)"); t1=$(date +%s%N)
expect "fault delay then normal" "$(( (t1 - t0) / 1000000 )) $r" '^([2-9][0-9][0-9]) 200 .*"text":"hi"'
r=$(msg "$(req hi)"); expect "queue empty -> normal" "$r" '^200 '
ctlpost /faults '{"reset":true}' >/dev/null; r=$(msg "$(req hi)"); expect "fault reset" "$r $(cat "$work/curlerr")" 'reset|Recv failure|56|SSL'
ctlpost /faults '{"truncate":true}' >/dev/null; r=$(msg "$(req hi)"); expect "fault truncate" "$r $(cat "$work/curlerr")" '(transfer closed|18|56|92|PROTOCOL)'
ctlpost /faults '{"hang":true}' >/dev/null; r=$(msg "$(req hi)" --max-time 1); expect "fault hang" "$r $(cat "$work/curlerr")" 'timed out|28'
ctlpost /faults '{"status":429,"error_type":"rate_limit_error","retry_after_ms":"1500","message":"slow down"}' >/dev/null
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(req hi)"); expect "fault 429 retry-after-ms" "$r" 'retry-after-ms: 1500.*"message":"slow down"'
ctlpost /faults '{"status":500}' >/dev/null; ctlpost /faults '' DELETE >/dev/null
r=$(msg "$(req hi)"); expect "DELETE /faults" "$r" '^200 '
r=$(ctlpost /faults '{"bogus":1}'); expect "bad fault rejected" "$r" 'unknown fault field'

# --- rate limit and headers
ctlpost /config '{"rpm":120,"ratelimit_headers":{"anthropic-ratelimit-tokens-limit":"1000"}}' >/dev/null
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(req hi)"); expect "rpm headers" "$r" 'anthropic-ratelimit-requests-limit: 120'
expect "fixed headers" "$r" 'anthropic-ratelimit-tokens-limit: 1000'
expect "reset header RFC 3339" "$r" 'anthropic-ratelimit-requests-reset: 20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z'
msg "$(req hi)" >/dev/null
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(req hi)"); expect "rpm 429" "$r" 'retry-after: 1.*429 .*rate_limit_error'
ctlpost /config '{"rpm":null,"ratelimit_headers":null}' >/dev/null
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(req hi)"); expect "rpm cleared" "$r" '200 \{'
[[ $r == *anthropic-ratelimit* ]] && notok "ratelimit headers cleared" "$r" || ok "ratelimit headers cleared"

# --- stats across keep-alive
ctlpost /reset >/dev/null
curl -sS "${httpv[@]}" --cacert "$ca" "${H[@]}" --data-binary "$(req one)" "$base/v1/messages" --next \
    "${httpv[@]}" --cacert "$ca" "${H[@]}" --data-binary "$(req two)" "$base/v1/messages" >"$work/two"
expect "two replies on one connection" "$(cat "$work/two")" '"text":"one".*"text":"two"'
s=$(curl -sS "$ctl/stats")
expect "stats requests=2" "$s" '"requests":2,'
expect "stats tcp_connections=1" "$s" '"tcp_connections":1,'
expect "stats tls_handshakes=1" "$s" '"tls_handshakes":1,'
expect "stats by_status" "$s" '"by_status":\{"200":2\}'
expect "stats keys hashed" "$s" '"keys":\{"[0-9a-f]{16}":2\}'
[ -n "$h2" ] && expect "http2 session" "$s" '"http2_sessions":1,'
q=$(curl -sS "$ctl/requests?since=1")
expect "requests since=1" "$q" '^\[\{"n":2,"t_start":[0-9.]+,"t_end":[0-9.]+,"method":"POST","path":"/v1/messages","status":200,'
expect "request record key hashed" "$q" '"x-api-key":"[0-9a-f]{16}"'
if [ -n "$h2" ]; then expect "http_version 2.0" "$q" '"http_version":"2.0"'; fi

# --- big body (4 MB) round trip and record truncation
node -e 'const s="é\"\\\u0001😀".repeat(700000); process.stdout.write(JSON.stringify({model:"m",max_tokens:5,messages:[{role:"user",content:s}]}))' >"$work/big.json"
api /v1/messages "${H[@]}" --data-binary @"$work/big.json" >/dev/null
node -e '
const fs=require("fs"); const rq=JSON.parse(fs.readFileSync(process.argv[1])); const rs=JSON.parse(fs.readFileSync(process.argv[2]));
process.exit(rs.content[0].text===rq.messages[0].content ? 0 : 1)' "$work/big.json" "$work/body" \
    && ok "4 MB round trip exact" || notok "4 MB round trip exact" "$(head -c 200 "$work/body")"
q=$(curl -sS "$ctl/requests?since=2")
expect "big record truncated" "$q" '"_truncated":true'

# --- message batches
ctlpost /reset >/dev/null
r=$(curl -sS "$ctl/config"); expect "batch_delay_ms default" "$r" '"batch_delay_ms":1000'
ctlpost /config '{"batch_delay_ms":300}' >/dev/null
bitem() { printf '{"custom_id":"%s","params":%s}' "$1" "$(req "$2")"; }
b3="{\"requests\":[$(bitem ok-1 'hello batch'),$(bitem err_2 'x [[mock:batch_errored]]'),$(bitem exp3 'y [[mock:batch_expired]]')]}"
batch() { api /v1/messages/batches "${H[@]}" --data-binary "$1" "${@:2}"; }
r=$(batch "$b3"); expect "batch create" "$r" '^200 \{"id":"msgbatch_mock_[0-9]+","type":"message_batch","processing_status":"in_progress","request_counts":\{"processing":3,"succeeded":0,"errored":0,"canceled":0,"expired":0\},"ended_at":null,"created_at":"20[0-9-]+T[0-9:.]+Z","expires_at":"20[0-9-]+T[0-9:.]+Z","archived_at":null,"cancel_initiated_at":null,"results_url":null\}$'
b1=$(sed -E 's/.*"id":"([^"]+)".*/\1/' <<<"$r")
r=$(api "/v1/messages/batches/$b1/results" "${H[@]}"); expect "batch results before end -> 400" "$r" '^400 .*invalid_request_error.*results not available yet'
for _ in $(seq 1 50); do r=$(api "/v1/messages/batches/$b1" "${H[@]}"); [[ $r == *'"ended"'* ]] && break; sleep 0.1; done
expect "batch ended" "$r" "^200 .*\"processing_status\":\"ended\",\"request_counts\":\\{\"processing\":0,\"succeeded\":1,\"errored\":1,\"canceled\":0,\"expired\":1\\},\"ended_at\":\"20.*\"results_url\":\"https://127.0.0.1:$port/v1/messages/batches/$b1/results\"\\}\$"
r=$(api "/v1/messages/batches/$b1/results" "${H[@]}" -D -); expect "batch results content-type" "$r" 'content-type: application/x-jsonl'
r=$(sed -E 's/"id":"msg_mock_b[0-9]+"/"id":"msg_mock_bK"/' "$work/body")
ref=$(msg "$(req 'hello batch')"); ref=${ref#200 }; ref=$(sed -E 's/"id":"msg_mock_[0-9]+"/"id":"msg_mock_bK"/' <<<"$ref")
[[ $(sed -n 1p <<<"$r") == "{\"custom_id\":\"ok-1\",\"result\":{\"type\":\"succeeded\",\"message\":$ref}}" ]] && ok "batch succeeded = /v1/messages reply" || notok "batch succeeded = /v1/messages reply" "$r | $ref"
[[ $(sed -n 2p <<<"$r") == '{"custom_id":"err_2","result":{"type":"errored","error":{"type":"error","error":{"type":"invalid_request_error","message":"mock batch item error"},"request_id":null}}}' ]] && ok "batch errored line" || notok "batch errored line" "$r"
[[ $(sed -n 3p <<<"$r") == '{"custom_id":"exp3","result":{"type":"expired"}}' && $(wc -l <<<"$r") -eq 3 ]] && ok "batch expired line" || notok "batch expired line" "$r"
r=$(batch "$b3"); b2=$(sed -E 's/.*"id":"([^"]+)".*/\1/' <<<"$r")
r=$(api "/v1/messages/batches/$b2/cancel" "${H[@]}" -X POST); expect "batch cancel -> canceling" "$r" '^200 .*"processing_status":"canceling",.*"cancel_initiated_at":"20[^"]+Z","results_url":null\}$'
sleep 0.4
r=$(api "/v1/messages/batches/$b2" "${H[@]}"); expect "canceled batch ended" "$r" '^200 .*"processing_status":"ended","request_counts":\{"processing":0,"succeeded":0,"errored":0,"canceled":3,"expired":0\}'
r=$(api "/v1/messages/batches/$b2/results" "${H[@]}"); expect "canceled results" "$(tr '\n' '|' <<<"$r")" '^200 \{"custom_id":"ok-1","result":\{"type":"canceled"\}\}\|\{"custom_id":"err_2","result":\{"type":"canceled"\}\}\|\{"custom_id":"exp3","result":\{"type":"canceled"\}\}\|$'
before=$(api "/v1/messages/batches/$b1" "${H[@]}")
r=$(api "/v1/messages/batches/$b1/cancel" "${H[@]}" -X POST)
[ "$r" == "$before" ] && ok "cancel of ended batch unchanged" || notok "cancel of ended batch unchanged" "$r"
p=$(req x)
for bad in "{\"requests\":[{\"custom_id\":\"bad id!\",\"params\":$p}]}" \
    "{\"requests\":[{\"custom_id\":\"$(printf 'a%.0s' {1..65})\",\"params\":$p}]}" \
    "{\"requests\":[{\"custom_id\":\"a\",\"params\":$p},{\"custom_id\":\"a\",\"params\":$p}]}" \
    '{"requests":[]}' '{}' "{\"requests\":[{\"custom_id\":\"a\"}]}" \
    '{"requests":[{"custom_id":"a","params":{"model":"m","messages":[{"role":"user","content":"x"}]}}]}' \
    '{"requests":[{"custom_id":"a","params":{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"x"}]}}]}'; do
    r=$(batch "$bad"); expect "batch 400 for ${bad:0:70}" "$r" '^400 \{"type":"error","error":\{"type":"invalid_request_error","message":'
done
r=$(api /v1/messages/batches -H 'anthropic-version: 2023-06-01' --data-binary "$b3"); expect "batch 401 no key" "$r" '^401 '
r=$(api /v1/messages/batches/msgbatch_nope "${H[@]}"); expect "batch 404" "$r" '^404 .*not_found_error'
r=$(api /v1/messages/batches "${H[@]}"); expect "batch list newest first" "$r" "^200 \\{\"data\":\\[\\{\"id\":\"$b2\".*\\{\"id\":\"$b1\".*\\],\"has_more\":false,\"first_id\":\"$b2\",\"last_id\":\"$b1\"\\}\$"
s=$(curl -sS "$ctl/stats"); expect "stats batches=2" "$s" '"batches":2[,}]'
expect "stats by_path batches" "$s" '"/v1/messages/batches":1[0-9],'
q=$(curl -sS "$ctl/requests?since=1"); expect "batch request recorded" "$q" '"path":"/v1/messages/batches","status":200,.*"body":\{"requests":\[\{"custom_id":"ok-1"'
# 100,000 items
node -e 'const r=[];for(let i=0;i<100000;i++)r.push({custom_id:"i"+i,params:{model:"m",max_tokens:8,messages:[{role:"user",content:"t"+i}]}});process.stdout.write(JSON.stringify({requests:r}))' >"$work/b100k.json"
ctlpost /config '{"batch_delay_ms":0}' >/dev/null
r=$(batch @"$work/b100k.json"); expect "batch of 100000" "$r" '^200 .*"processing":100000,'
b3=$(sed -E 's/.*"id":"([^"]+)".*/\1/' <<<"$r")
r=$(api "/v1/messages/batches/$b3/results" "${H[@]}"); expect "100000 results" "$(wc -l <"$work/body") $(tail -1 "$work/body")" '^100000 \{"custom_id":"i99999","result":\{"type":"succeeded","message":\{"id":"msg_mock_b[0-9]+",.*"text":"t99999"'
q=$(curl -sS "$ctl/requests?since=0" | node -e 'const a=JSON.parse(require("fs").readFileSync(0));const r=a.find(x=>x.body_bytes>1e6);console.log(r._truncated, r.body.requests.length < 100000)')
expect "100000 batch record truncated" "$q" '^true true$'
ctlpost /reset >/dev/null
r=$(curl -sS "$ctl/config"); expect "/reset restores batch_delay_ms" "$r" '"batch_delay_ms":1000'
r=$(api /v1/messages/batches "${H[@]}"); expect "/reset forgets batches" "$r" '^200 \{"data":\[\],"has_more":false,"first_id":null,"last_id":null\}$'

echo "# $checks checks, $fails failed"
if [ -n "$bench" ]; then
    "$node" "$here/bench.js" "$port" "$ca" ${h2:+h2}
fi
exec {MOCK[1]}>&-
[ "$fails" -eq 0 ]
