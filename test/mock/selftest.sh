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
    '{"model":"m","max_tokens":5,"stream":"yes","messages":[{"role":"user","content":"x"}]}' \
    '{"model":"m","max_tokens":5,"stream":1,"messages":[{"role":"user","content":"x"}]}'; do
    r=$(msg "$bad"); expect "400 for $bad" "$r" '^400 \{"type":"error","error":\{"type":"invalid_request_error","message":'
done
r=$(api /v1/messages/count_tokens "${H[@]}" --data-binary '{"model":"m","messages":[{"role":"user","content":"12345678"}]}')
expect "count_tokens" "$r" '^200 \{"input_tokens":2\}'
for st in true false; do
    r=$(api /v1/messages/count_tokens "${H[@]}" --data-binary '{"model":"m","stream":'$st',"messages":[{"role":"user","content":"x"}]}')
    expect "count_tokens refuses stream:$st" "$r" '^400 .*"invalid_request_error","message":"stream: Extra inputs'
done
r=$(api '/v1/models?limit=2' "${H[@]}"); expect "models page 1" "$r" '^200 .*"has_more":true,"first_id":"claude-sonnet-4-6","last_id":"claude-opus-4-5"'
r=$(api '/v1/models?limit=10&after_id=claude-opus-4-5' "${H[@]}"); expect "models page 2" "$r" '^200 .*"has_more":false,"first_id":"claude-haiku-4-5","last_id":"claude-opus-4-1"'
ctlpost /config '{"models_page_size":1}' >/dev/null
r=$(api '/v1/models?limit=1000' "${H[@]}"); expect "models_page_size caps a page" "$r" '^200 .*"has_more":true,"first_id":"claude-sonnet-4-6","last_id":"claude-sonnet-4-6"'
ctlpost /config '{"models_page_size":null}' >/dev/null
# the canned fast path: a fixed Message at once, counted, nothing checked
ctlpost /config '{"canned":true}' >/dev/null
n0=$(curl -sS "$ctl/stats" | grep -o '"requests":[0-9]*' | cut -d: -f2)
r=$(msg '{"not":"checked"}'); expect "canned: a fixed Message for any body" "$r" '^200 .*"id":"msg_canned".*"usage":\{"input_tokens":[0-9]+'
n1=$(curl -sS "$ctl/stats" | grep -o '"requests":[0-9]*' | cut -d: -f2)
expect "canned: counted" "$((n1 - n0))" '^1$'
r=$(ctlpost /config '{"canned":"yes"}'); expect "canned must be a boolean" "$r" 'canned must be a boolean'
ctlpost /config '{"canned":false}' >/dev/null
r=$(msg '{"not":"checked"}'); expect "canned off: checked again" "$r" '^400 '

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
# prefetch tests (issue 28): the error's message names the failing row
r=$(msg "$(req '[[mock:status=400]][[mock:error_message=row seven]]')"); expect "error_message directive" "$r" '^400 .*"message":"row seven"'
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

# --- streaming (server-sent events)
# sse.js FILE: checks the framing and the event grammar of a stream and
# reassembles it as a client would; prints the event names, the Message,
# and {"deltas","pings","complete","error"}.  Exit 1 (after "BAD ...") on a
# framing or grammar error.
cat >"$work/sse.js" <<'EOF'
'use strict';
const raw = require('fs').readFileSync(process.argv[2], 'utf8');
const bad = (m) => { console.log(`BAD ${m}`); process.exit(1); };
const parts = raw.split('\n\n');
const tail = parts.pop();
const names = [];
const json = [];
let msg = null;
let error = null;
let deltas = 0;
let pings = 0;
let open = -1;
for (const p of parts) {
    const m = /^event: ([a-z_]+)\ndata: ([^\n]*)$/.exec(p);
    if (!m)
        bad(`framing: ${JSON.stringify(p.slice(0, 120))}`);
    const d = JSON.parse(m[2]);
    if (d.type !== m[1])
        bad(`event ${m[1]} with data of type ${d.type}`);
    if (names[names.length - 1] === 'message_stop' || names[names.length - 1] === 'error')
        bad(`${m[1]} after the end`);
    if (msg === null && m[1] !== 'message_start')
        bad(`${m[1]} before message_start`);
    names.push(m[1]);
    switch (m[1]) {
        case 'message_start':
            if (msg !== null || d.message.content.length !== 0 || d.message.stop_reason !== null ||
                d.message.usage.output_tokens !== 1)
                bad('message_start');
            msg = d.message;
            break;
        case 'ping':
            pings++;
            break;
        case 'content_block_start':
            if (open !== -1 || d.index !== msg.content.length)
                bad(`content_block_start index ${d.index}`);
            open = d.index;
            msg.content.push(d.content_block);
            break;
        case 'content_block_delta': {
            if (d.index !== open)
                bad(`delta for block ${d.index}, open ${open}`);
            deltas++;
            const b = msg.content[open];
            const x = d.delta;
            const want = { text_delta: 'text', citations_delta: 'text', input_json_delta: 'tool_use',
                thinking_delta: 'thinking', signature_delta: 'thinking' }[x.type];
            if (want !== b.type)
                bad(`${x.type} in a ${b.type} block`);
            if (x.type === 'text_delta')
                b.text += x.text;
            else if (x.type === 'citations_delta')
                b.citations.push(x.citation);
            else if (x.type === 'input_json_delta')
                json[open] = (json[open] || '') + x.partial_json;
            else if (x.type === 'thinking_delta')
                b.thinking += x.thinking;
            else
                b.signature += x.signature;
            break;
        }
        case 'content_block_stop':
            if (d.index !== open)
                bad(`content_block_stop ${d.index}, open ${open}`);
            if (json[open])
                msg.content[open].input = JSON.parse(json[open]);
            open = -1;
            break;
        case 'message_delta':
            if (open !== -1)
                bad('message_delta inside a block');
            msg.stop_reason = d.delta.stop_reason;
            msg.stop_sequence = d.delta.stop_sequence;
            msg.usage.output_tokens = d.usage.output_tokens;
            break;
        case 'message_stop':
            if (names[names.length - 2] !== 'message_delta')
                bad('message_stop not after message_delta');
            break;
        case 'error':
            error = d;
            break;
        default:
            bad(`unknown event ${m[1]}`);
    }
}
console.log(names.join(' '));
console.log(JSON.stringify(msg));
console.log(JSON.stringify({ deltas, pings, complete: tail === '', error }));
EOF
# sse: parse the body of the last api call into S (names), M (Message), X (summary)
sse() { local out; out=$("$node" "$work/sse.js" "$work/body"); S=$(sed -n 1p <<<"$out"); M=$(sed -n 2p <<<"$out"); X=$(sed -n 3p <<<"$out"); }
sreq() { printf '{"model":"claude-sonnet-4-6","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"%s"}]}' "$1"; }
nomsgid() { sed -E 's/"(msg|toolu)_mock_[0-9]+"/"\1_mock_N"/g'; }
lastrec() { curl -sS "$ctl/requests" | "$node" -e 'const a=JSON.parse(require("fs").readFileSync(0));const r=a[a.length-1];console.log(JSON.stringify({stream:r.stream,stream_deltas:r.stream_deltas,stream_end:r.stream_end}))'; }
ORDER='^message_start ping (content_block_start( content_block_delta)* content_block_stop )+message_delta message_stop$'

ctlpost /reset >/dev/null
text='stream me: caf\u00e9 \ud83d\ude00 \"quoted\" \\ tab\t and more text'     # 47 code points
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(sreq "$text")")
expect "stream: 200 text/event-stream" "$r" '^HTTP/[0-9.]+ 200.*content-type: text/event-stream; charset=utf-8'
expect "stream: cache-control no-cache" "$r" 'cache-control: no-cache'
expect "stream: request-id header" "$r" 'request-id: req_mock_[0-9]+'
sse
expect "stream: event order" "$S" "$ORDER"
expect "stream: pieces of 8 code points" "$X" '^\{"deltas":6,"pings":1,"complete":true,"error":null\}$'
ref=$(msg "$(req "$text")"); ref=${ref#200 }
[ -n "$M" ] && [ "$(nomsgid <<<"$M")" == "$(nomsgid <<<"$ref")" ] && ok "stream: reassembled = unstreamed reply" || notok "stream: reassembled = unstreamed reply" "$M | $ref"
expect "stream: record" "$(lastrec)" '^\{"stream":false\}$'
r=$(msg "$(sreq "$text")"); expect "stream: record of a stream" "$(lastrec)" '^\{"stream":true,"stream_deltas":6,"stream_end":"stop"\}$'
r=$(msg '{"model":"m","max_tokens":5,"stream":false,"messages":[{"role":"user","content":"x"}]}')
expect "stream:false is a JSON reply" "$r" '^200 \{"id":"msg_mock_[0-9]+","type":"message"'
r=$(msg '{"model":"m","max_tokens":50,'"$T"',"tool_choice":{"type":"tool","name":"pick"},"stream":true,"messages":[{"role":"user","content":"a question"}]}')
sse; expect "stream: tool_use event order" "$S" "$ORDER"
expect "stream: first input_json_delta is empty" "$(cat "$work/body")" '"delta":\{"type":"input_json_delta","partial_json":""\}\}'
ref=$(msg '{"model":"m","max_tokens":50,'"$T"',"tool_choice":{"type":"tool","name":"pick"},"messages":[{"role":"user","content":"a question"}]}'); ref=${ref#200 }
[ -n "$M" ] && [ "$(nomsgid <<<"$M")" == "$(nomsgid <<<"$ref")" ] && ok "stream: tool_use reassembled = unstreamed" || notok "stream: tool_use reassembled = unstreamed" "$M | $ref"

# rich replies
rich='why? [[mock:rich]]'
ref=$(msg "$(req "$rich")"); ref=${ref#200 }
expect "rich: the Message" "$ref" '^\{"id":"msg_[0-9a-f]{24}","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":\[\{"type":"thinking","thinking":"Let me think about \\"this\\" — ünïcödé 😀 step by step.","signature":"sig_[0-9a-f]{64}"\},\{"type":"redacted_thinking","data":"[A-Za-z0-9+/]+={0,2}"\},\{"type":"text","text":"The answer, with a citation: é😀\\n\\ttabs and \\\\ backslashes.","citations":\[\{"type":"char_location","cited_text":"The answer","document_index":0,"document_title":"[^"]+","start_char_index":0,"end_char_index":10\},\{"type":"char_location",[^]]+\}\]\},\{"type":"tool_use","id":"toolu_[0-9a-f]{24}","name":"lookup","input":\{"query":"ünïcödé \\"quoted\\"","n":3,"nested":\{"a":\[1,2.5,true,null\],"b":"😀"\}\}\}\],"stop_reason":"tool_use","stop_sequence":null,"usage":\{"input_tokens":[0-9]+,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":[0-9]+\}\}$'
r=$(msg "$(sreq "$rich")"); sse
expect "rich: event order" "$S" '^message_start ping content_block_start( content_block_delta)+ content_block_stop content_block_start content_block_stop content_block_start( content_block_delta)+ content_block_stop content_block_start( content_block_delta)+ content_block_stop message_delta message_stop$'
[ -n "$M" ] && [ "$M" == "$ref" ] && ok "rich: streamed = unstreamed, byte for byte" || notok "rich: streamed = unstreamed, byte for byte" "$M | $ref"
body=$(cat "$work/body")
expect "rich: start blocks emptied" "$body" '"content_block":\{"type":"thinking","thinking":"","signature":""\}.*"content_block":\{"type":"redacted_thinking","data":"[^"]+"\}.*"content_block":\{"type":"text","text":"","citations":\[\]\}.*"content_block":\{"type":"tool_use","id":"toolu_[0-9a-f]+","name":"lookup","input":\{\}\}'
expect "rich: delta types in order" "$(grep -o '"delta":{"type":"[a-z_]*"' <<<"$body" | uniq | tr '\n' ' ')" '^"delta":\{"type":"thinking_delta" "delta":\{"type":"signature_delta" "delta":\{"type":"citations_delta" "delta":\{"type":"text_delta" "delta":\{"type":"input_json_delta" $'
expect "rich: two citations_delta, one signature_delta" "$(grep -c citations_delta <<<"$body") $(grep -c signature_delta <<<"$body")" '^2 1$'
r=$(msg "$(req 'other prompt [[mock:rich]]')")
[[ ${r:5:28} != "${ref:1:28}" ]] && ok "rich: ids follow the prompt" || notok "rich: ids follow the prompt" "$r"

# config: chunk size, write size, delays, pings
ctlpost /config '{"stream_chunk_chars":3}' >/dev/null
r=$(msg "$(sreq 'abcdefghi\ud83d\ude00\ud83d\ude00')"); sse
expect "stream_chunk_chars=3" "$(grep -o '"text_delta","text":"[^"]*"' "$work/body" | tr '\n' ' ')" '^"text_delta","text":"abc" "text_delta","text":"def" "text_delta","text":"ghi" "text_delta","text":"😀😀" $'
ctlpost /config '{"stream_chunk_chars":1,"stream_write_bytes":1}' >/dev/null
r=$(msg "$(sreq "$rich")"); sse
[ -n "$M" ] && [ "$M" == "$ref" ] && ok "stream_write_bytes=1: still the same Message" || notok "stream_write_bytes=1: still the same Message" "$S | $M"
n=$("$node" -e '
const https = require("https");
const r = https.request({ host: "127.0.0.1", port: +process.argv[1], path: "/v1/messages", method: "POST",
    ca: require("fs").readFileSync(process.argv[2]),
    headers: { "x-api-key": "k1", "anthropic-version": "2023-06-01", "content-type": "application/json" } }, (res) => {
    let n = 0;
    const b = [];
    res.on("data", (c) => { n++; b.push(c); });
    res.on("end", () => console.log(n, Buffer.concat(b).length));
});
r.end(process.argv[3]);' "$port" "$ca" "$(sreq 'a few bytes, one write each')")
expect "stream_write_bytes=1: one byte per read" "$n" '^([0-9]+) \1$'
r=$(curl -sS "$ctl/config"); expect "stream config keys" "$r" '"stream_chunk_chars":1,"stream_write_bytes":1,"stream_delay_ms":0,"ping_ms":0'
ctlpost /config '{"stream_chunk_chars":null,"stream_write_bytes":null}' >/dev/null
for bad in '{"stream_chunk_chars":0}' '{"stream_chunk_chars":1.5}' '{"stream_write_bytes":-1}' '{"stream_delay_ms":"5"}' '{"ping_ms":-1}'; do
    r=$(ctlpost /config "$bad"); expect "config $bad rejected" "$r" '"error":'
done
t0=$(date +%s%N); r=$(msg "$(sreq 'ab [[mock:stream_delay=60]]')"); t1=$(date +%s%N); sse
expect "stream_delay directive: 8 waits of 60 ms" "$(( (t1 - t0) / 1000000 )) $S" '^([4-9][0-9][0-9]|[0-9]{4,}) message_start ping content_block_start'
ctlpost /config '{"stream_delay_ms":60}' >/dev/null
t0=$(date +%s%N); r=$(msg "$(sreq 'ab')"); t1=$(date +%s%N)
expect "stream_delay_ms config: 5 waits of 60 ms" "$(( (t1 - t0) / 1000000 ))" '^([3-9][0-9][0-9]|[0-9]{4,})$'
ctlpost /config '{"stream_delay_ms":0}' >/dev/null
t0=$(date +%s%N); r=$(msg "$(sreq 'abcdefghijklmnopq [[mock:stream_pause=400]][[mock:ping=90]]')"); t1=$(date +%s%N); sse
expect "stream_pause + ping: pings during the pause" "$(( (t1 - t0) / 1000000 )) $S" '^([4-9][0-9][0-9]|[0-9]{4,}) message_start ping content_block_start content_block_delta ping ping ping ping content_block_delta'
ctlpost /config '{"ping_ms":90}' >/dev/null
r=$(msg "$(sreq 'abcdefghijklmnopq [[mock:stream_pause=400]]')"); sse
expect "ping_ms config" "$S" 'content_block_delta ping ping ping ping content_block_delta'
ctlpost /config '{"ping_ms":0}' >/dev/null
# (curl 7.88's time_starttransfer is not the first response byte over HTTP/2)
tt=time_starttransfer; [ -n "$h2" ] && tt=time_total
r=$(api /v1/messages "${H[@]}" --data-binary "$(sreq 'x [[mock:delay=300]]')" -w "%{$tt}")
expect "delay directive before the stream's headers" "$(cat "$work/code")" '^(0\.[3-9]|[1-9])'

# stream faults, as directives
r=$(msg "$(sreq 'abcdefghijklmnopqrstuvwxyz [[mock:stream_error=overloaded_error@2]]')"); sse
expect "stream_error@2: error after 2 deltas" "$S" '^message_start ping content_block_start content_block_delta content_block_delta error$'
expect "stream_error@2: error event" "$X" '"complete":true,"error":\{"type":"error","error":\{"type":"overloaded_error","message":"Overloaded"\}\}\}$'
expect "stream_error@2: clean end" "$(cat "$work/curlerr")" '^$'
expect "stream_error@2: record" "$(lastrec)" '^\{"stream":true,"stream_deltas":2,"stream_end":"error"\}$'
r=$(msg "$(sreq 'abc [[mock:stream_error=api_error]]')"); sse
expect "stream_error@0: right after message_start and ping" "$S $X" '^message_start ping error .*"error":\{"type":"api_error","message":"Internal server error"\}'
r=$(msg "$(sreq 'abc [[mock:stream_error=api_error@50]]')"); sse
expect "stream_error@N past the end: instead of message_stop" "$S" 'content_block_stop message_delta error$'
r=$(msg "$(sreq 'abcdefghijklmnopqrstuvwxyz [[mock:stream_cut=3]]')"); sse
expect "stream_cut=3: connection killed" "$(cat "$work/curlerr")" '\((18|56|92)\)'
expect "stream_cut=3: 3 deltas, no message_stop" "$S $X" '^message_start ping content_block_start content_block_delta content_block_delta content_block_delta \{"deltas":3,'
expect "stream_cut=3: record" "$(lastrec)" '^\{"stream":true,"stream_deltas":3,"stream_end":"cut"\}$'
r=$(msg "$(sreq 'abcdefghijklmnopqrstuvwxyz [[mock:stream_no_stop]]')"); sse
expect "stream_no_stop: no message_stop" "$S" 'content_block_stop message_delta$'
expect "stream_no_stop: clean end" "$(cat "$work/curlerr")" '^$'
expect "stream_no_stop: record" "$(lastrec)" '"stream_end":"no_stop"\}$'
r=$(msg "$(req 'abc [[mock:stream_cut=0]]')"); expect "stream directives ignored without stream" "$r" '^200 \{"id":"msg_mock_'
r=$(msg "$(sreq 'abcdefghijklmnopqrstuvwxyz [[mock:stream_delay=200]]')" --max-time 0.5)
expect "client gone mid-stream" "$(cat "$work/curlerr")" '\(28\)'
sleep 0.3
expect "client gone mid-stream: record" "$(lastrec)" '"stream_end":"client_closed"\}$'
expect "client gone mid-stream: nothing left running" "$(curl -sS "$ctl/stats")" '"concurrency":0,'

# stream faults, through the queue
ctlpost /faults '{"stream_error":"overloaded_error","stream_error_after":1}' >/dev/null
r=$(msg "$(sreq 'abcdefghijklmnop')"); sse
expect "fault stream_error: error after 1 delta" "$S" 'content_block_start content_block_delta error$'
r=$(msg "$(sreq 'abcdefghijklmnop')"); sse
expect "fault stream_error consumed: the retry succeeds" "$S" "$ORDER"
ctlpost /faults '{"stream_cut_after":2,"count":2}' >/dev/null
r=$(msg "$(sreq 'abcdefghijklmnopqrstuvwxyz')"); sse; expect "fault stream_cut_after #1" "$X $(cat "$work/curlerr")" '^\{"deltas":2,.*\((18|56|92)\)'
r=$(msg "$(sreq 'abcdefghijklmnopqrstuvwxyz')"); sse; expect "fault stream_cut_after #2" "$X" '^\{"deltas":2,'
r=$(msg "$(sreq 'abcdefghijklmnopqrstuvwxyz')"); sse; expect "fault stream_cut_after used up" "$S" "$ORDER"
ctlpost /faults '[{"stream_no_stop":true},{"stream_no_stop":true}]' >/dev/null
r=$(msg "$(req 'plain')"); expect "stream fault popped by an unstreamed request: normal reply" "$r" '^200 \{"id":"msg_mock_[0-9]+".*"text":"plain"'
r=$(msg "$(sreq 'abc')"); sse; expect "fault stream_no_stop" "$S" 'message_delta$'
r=$(msg "$(sreq 'abc')"); sse; expect "fault stream_no_stop used up" "$S" "$ORDER"
ctlpost /faults '{"stream_pause_ms":300}' >/dev/null
t0=$(date +%s%N); r=$(msg "$(sreq 'abcdefghijklmnop')"); t1=$(date +%s%N)
expect "fault stream_pause_ms" "$(( (t1 - t0) / 1000000 ))" '^([3-9][0-9][0-9]|[0-9]{4,})$'
ctlpost /faults '{"status":529,"stream_error":"api_error"}' >/dev/null
r=$(msg "$(sreq 'abc')"); expect "fault status wins over its stream keys" "$r" '^529 \{"type":"error","error":\{"type":"overloaded_error"'
for bad in '{"stream_error":5}' '{"stream_error_after":1}' '{"stream_error":"api_error","stream_error_after":-1}' \
    '{"stream_cut_after":1.5}' '{"stream_no_stop":"yes"}' '{"stream_pause_ms":-5}'; do
    r=$(ctlpost /faults "$bad"); expect "fault $bad rejected" "$r" '"error":'
done
s=$(curl -sS "$ctl/stats"); expect "stats streams" "$s" '"streams":[1-9][0-9],?'
ctlpost /config '{"stream_chunk_chars":2,"stream_write_bytes":3,"stream_delay_ms":1,"ping_ms":1}' >/dev/null
ctlpost /reset >/dev/null
r=$(curl -sS "$ctl/config"); expect "/reset restores the stream keys" "$r" '"stream_chunk_chars":8,"stream_write_bytes":0,"stream_delay_ms":0,"ping_ms":0\}$'
expect "/reset zeroes stats streams" "$(curl -sS "$ctl/stats")" '"streams":0\}$'

# --- wire faults: 103, trailers, raw bytes, a stream kept open
ctlpost /faults '{"early_hints":{"X-Early":"103 only"},"body":"{\"ok\":1}"}' >/dev/null
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(req hi)")
expect "early_hints: a 103 with its headers, then the reply" "$(tr -d '\r' <<<"$r" | tr '\n' '|')" '^HTTP/[0-9.]+ 103[^|]*\|(.*\|)?x-early: 103 only\|.*HTTP/[0-9.]+ 200.*\{"ok":1\}\|?$'
ctlpost /faults '{"status":529,"should_retry":false,"trailers":{"X-Should-Retry":"true"}}' >/dev/null
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(req hi)")
expect "trailers: after the body" "$(tr -d '\r' <<<"$r" | tr '\n' '|')" '^HTTP/[0-9.]+ 529.*x-should-retry: false\|.*x-should-retry: true\|.*overloaded_error'
raw=$(printf 'HTTP/1.1 200 OK\r\nrequest-id: a\033[31mb\rc\377d\r\ncontent-type: application/json\r\ncontent-length: 8\r\n\r\n{"ok":2}' | base64 -w0)
ctlpost /faults "{\"raw_response_base64\":\"$raw\"}" >/dev/null
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(req hi)")
if [ -n "$h2" ]; then
    expect "raw_response_base64: HTTP/1.1 only" "$r" '500 .*needs HTTP/1.1'
else
    [[ $r == *$'request-id: a\033[31mb\rc\377d'* && $r == *'200 {"ok":2}' ]] && ok "raw_response_base64: the bytes as given" || notok "raw_response_base64: the bytes as given" "$r"
fi
ctlpost /faults '{"stream_keep_open":true}' >/dev/null
api /v1/messages "${H[@]}" --data-binary "$(sreq 'kept open [[mock:ping=200]]')" --max-time 1.5 >/dev/null
expect "stream_keep_open: still open after message_stop" "$(cat "$work/curlerr")" '\(28\)'
sse; expect "stream_keep_open: pings after message_stop" "$S" 'ping after the end'
sleep 0.2
expect "stream_keep_open: record" "$(lastrec)" '"stream_end":"kept_open"\}$'
for bad in '{"raw_response_base64":5}' '{"early_hints":"x"}' '{"trailers":[1]}' '{"stream_keep_open":1}'; do
    r=$(ctlpost /faults "$bad"); expect "fault $bad rejected" "$r" '"error":'
done

# --- rate limit and headers
ctlpost /config '{"rpm":120,"ratelimit_headers":{"anthropic-ratelimit-tokens-limit":"1000"}}' >/dev/null
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(req hi)"); expect "rpm headers" "$r" 'anthropic-ratelimit-requests-limit: 120'
expect "fixed headers" "$r" 'anthropic-ratelimit-tokens-limit: 1000'
expect "reset header RFC 3339" "$r" 'anthropic-ratelimit-requests-reset: 20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z'
msg "$(req hi)" >/dev/null
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(req hi)"); expect "rpm 429" "$r" 'retry-after: 1.*429 .*rate_limit_error'
ctlpost /config '{"rpm":null}' >/dev/null
r=$(api /v1/messages "${H[@]}" -D - --data-binary '{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}')
expect "fixed headers on a stream" "$r" 'anthropic-ratelimit-tokens-limit: 1000.*content-type: text/event-stream|content-type: text/event-stream.*anthropic-ratelimit-tokens-limit: 1000'
ctlpost /config '{"rpm":null,"ratelimit_headers":null}' >/dev/null
r=$(api /v1/messages "${H[@]}" -D - --data-binary "$(req hi)"); expect "rpm cleared" "$r" '200 \{'
[[ $r == *anthropic-ratelimit* ]] && notok "ratelimit headers cleared" "$r" || ok "ratelimit headers cleared"

# --- connection faults (issue 24)
ctlpost /reset >/dev/null
if [ -z "$h2" ]; then
    # rawpost TEXT: one raw Messages request on the wire
    rawpost() { printf 'POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: k1\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s' "$(req "$1" | wc -c)" "$(req "$1")"; }
    tls() { timeout 3 openssl s_client -quiet -ign_eof -CAfile "$ca" -connect "127.0.0.1:$port" 2>/dev/null; }
    ctlpost /faults '{"duplicate_after_ms":0}' >/dev/null
    raw=$(rawpost twice | tls)
    expect "duplicate_after_ms 0: the same reply twice in one write" "$(grep -o 'HTTP/1.1 200' <<<"$raw" | wc -l) $(grep -o '"text":"twice"' <<<"$raw" | wc -l)" '^2 2$'
    expect "duplicated recorded" "$(curl -sS "$ctl/requests?since=0")" '"duplicated":true'
    ctlpost /faults '{"duplicate_after_ms":200}' >/dev/null
    raw=$({ rawpost later; sleep 0.6; rawpost next; sleep 0.6; } | tls)
    expect "duplicate_after_ms 200: reply, its copy, then the next reply" "$(grep -o '"text":"[a-z]*"' <<<"$raw" | tr '\n' ' ')" '^"text":"later" "text":"later" "text":"next" $'
fi
ctlpost /faults '{"close_unanswered":true}' >/dev/null
r=$(msg "$(req closed)"); expect "close_unanswered: no reply" "$r" '^000'
expect "close_unanswered recorded" "$(curl -sS "$ctl/requests?since=0")" '"outcome":"closed"'
ctlpost /faults '{"stall_connection":true}' >/dev/null
curl -sS "${httpv[@]}" --cacert "$ca" "${H[@]}" --max-time 1 --data-binary "$(req stalled)" "$base/v1/messages" --next \
    "${httpv[@]}" --cacert "$ca" "${H[@]}" --max-time 1 --data-binary "$(req after)" "$base/v1/messages" >/dev/null 2>&1
expect "stall_connection: unanswered" "$(curl -sS "$ctl/requests?since=0")" '"outcome":"stalled"'
r=$(msg "$(req fresh)"); expect "a new connection is answered" "$r" '^200 .*"text":"fresh"'
ctlpost /faults '{"zero_streams":true}' >/dev/null
r=$(msg "$(req zero)"); expect "zero_streams: the request itself is answered" "$r" '^200 .*"text":"zero"'
r=$(ctlpost /faults '{"duplicate_after_ms":-1}'); expect "duplicate_after_ms checked" "$r" 'must be a number'
r=$(ctlpost /faults '{"stall_connection":1}'); expect "stall_connection checked" "$r" 'must be a boolean'
ctlpost /reset >/dev/null

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
# --- hostile batches (issue 24)
ctlpost /config '{"batch_delay_ms":200,"batch_status":"validating","batch_counts":{"succeeded":2147483647,"errored":-5}}' >/dev/null
hb="{\"requests\":[$(bitem u1 'u [[mock:batch_usage=1.5]] [[mock:batch_model=claude-opus-4-5]]'),$(bitem e2 'caf\u00e9 [[mock:batch_escape]] [[mock:batch_huge=5000]]')]}"
r=$(batch "$hb"); expect "unknown processing_status on creation" "$r" '^200 .*"processing_status":"validating","request_counts":\{"processing":2,"succeeded":2147483647,"errored":-5,'
hb1=$(sed -E 's/.*"id":"([^"]+)".*/\1/' <<<"$r")
sleep 0.3
r=$(api "/v1/messages/batches/$hb1" "${H[@]}"); expect "hostile counts once ended" "$r" '"processing_status":"ended","request_counts":\{"processing":0,"succeeded":2147483647,"errored":-5,'
r=$(api "/v1/messages/batches/$hb1/results" "${H[@]}")
expect "hostile usage literal" "$(sed -n 1p "$work/body")" '^\{"custom_id":"u1",.*"model":"claude-opus-4-5",.*"usage":\{"input_tokens":1.5,"output_tokens":[0-9]+\}'
expect "escaped line" "$(sed -n 2p "$work/body")" '^\{"custom_id":"e2",.*"text":"caf\\u00e9 \[\[mock:batch_escape\]\]'
[ "$(tail -n +3 "$work/body" | wc -c)" -eq 5000 ] && ok "huge padding of 5000 bytes" || notok "huge padding of 5000 bytes" "$(tail -n +3 "$work/body" | wc -c)"
ctlpost /config '{"batch_status":null,"batch_counts":null,"batch_results_bps":200}' >/dev/null
r=$(batch "{\"requests\":[$(bitem s1 'slow [[mock:batch_slow=1]]')]}"); hb2=$(sed -E 's/.*"id":"([^"]+)".*/\1/' <<<"$r")
expect "status back to in_progress" "$r" '"processing_status":"in_progress"'
sleep 0.3
t0=$(date +%s%N); r=$(api "/v1/messages/batches/$hb2/results" "${H[@]}"); t1=$(date +%s%N)
n=$(wc -c <"$work/body")
[ $(( (t1 - t0) / 1000000 )) -ge 1000 ] && [ "$n" -gt 200 ] && ok "first download trickles ($n bytes in $(( (t1 - t0) / 1000000 )) ms)" || notok "first download trickles" "$n bytes in $(( (t1 - t0) / 1000000 )) ms"
t0=$(date +%s%N); r=$(api "/v1/messages/batches/$hb2/results" "${H[@]}"); t1=$(date +%s%N)
[ $(( (t1 - t0) / 1000000 )) -lt 1000 ] && [ "$(wc -c <"$work/body")" -eq "$n" ] && ok "the second does not" || notok "the second does not" "$(( (t1 - t0) / 1000000 )) ms"
r=$(ctlpost /config '{"batch_results_bps":0}'); expect "batch_results_bps checked" "$r" 'batch_results_bps must be'
ctlpost /reset >/dev/null
r=$(curl -sS "$ctl/config"); expect "/reset restores batch_delay_ms" "$r" '"batch_delay_ms":1000'
expect "/reset restores the hostile batch keys" "$r" '"batch_status":null,"batch_counts":null,"batch_results_bps":5'
r=$(api /v1/messages/batches "${H[@]}"); expect "/reset forgets batches" "$r" '^200 \{"data":\[\],"has_more":false,"first_id":null,"last_id":null\}$'

echo "# $checks checks, $fails failed"
if [ -n "$bench" ]; then
    "$node" "$here/bench.js" "$port" "$ca" ${h2:+h2}
fi
exec {MOCK[1]}>&-
[ "$fails" -eq 0 ]
