#!/usr/bin/env node
// mock-api.js -- a TLS mock of the Anthropic Messages API for the test suite.
//
// usage: node mock-api.js --cert FILE --key FILE [--host 127.0.0.1] [--port 0]
//          [--control-port 0] [--http2 | --plain] [--keys k1,k2] [--latency-ms N]
//          [--max-lifetime-s 3600] [--exit-on-stdin-eof]
//
// --plain serves plain HTTP/1.1 (no TLS) on the API port.
//
// Prints one JSON line {"port":P,"control_port":C,"pid":N} on stdout once both
// servers listen, and nothing else on stdout afterwards.  See the comments
// of the control server below for the control interface.
//
// POST /v1/messages echoes the last user message.  Directives in that
// message change the reply:
//   [[mock:delay=MS]] wait before answering; [[mock:status=N]] an error reply
//     (its message TEXT with [[mock:error_message=TEXT]]);
//   [[mock:hang]] [[mock:reset]] [[mock:malformed]] [[mock:truncate]];
//   [[mock:no_tool]] a text reply despite a forced tool_choice;
//   [[mock:schema_break=KIND]] a structured reply that breaks the caller's
//     schema (see "structured output" below);
//   [[mock:batch_errored]] [[mock:batch_expired]] [[mock:batch_malformed]]
//     (message batch items only; the last one's result line is cut short);
//   hostile batch results (items only): [[mock:batch_usage=LITERAL]]
//     [[mock:batch_model=NAME]] [[mock:batch_escape]] [[mock:batch_huge=BYTES]]
//     [[mock:batch_slow=N]] -- see "hostile batches" below;
//   [[mock:rich]] a Message with a thinking, a redacted_thinking, a text
//     block with two char_location citations and a tool_use block, with
//     non-ASCII text and ids derived from a SHA-256 of the prompt (see
//     richMessage), stop_reason "tool_use".
//   [[mock:billing=N]] a billing_error reply with HTTP status N (default 400),
//     see "billing_error (issue 27)" below.
// "stream": true gets the same Message as server-sent events, in the real
// API's order (message_start, ping, per block content_block_start,
// content_block_delta..., content_block_stop, then message_delta,
// message_stop).  Directives for streams only (others ignore them):
//   [[mock:stream_delay=MS]] wait MS between the events after message_start
//     and its ping;
//   [[mock:stream_pause=MS]] wait MS once, after the first content_block_delta;
//   [[mock:ping=MS]] a ping event every MS during those waits;
//   [[mock:stream_error=TYPE@N]] after N content_block_delta events (0: right
//     after message_start and ping) an "error" event of that type, then the
//     response ends cleanly;
//   [[mock:stream_cut=N]] after N content_block_delta events the connection
//     (HTTP/1.1) or the stream (HTTP/2, RST_STREAM INTERNAL_ERROR) is killed;
//   [[mock:stream_no_stop]] all events but message_stop, then a clean end.
// With fewer than N deltas in the reply, the error or cut takes the place of
// message_stop.
//
// Only Node.js built-in modules are used.
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const http2 = require('http2');
const net = require('net');
const crypto = require('crypto');
const { performance } = require('perf_hooks');

const MAX_BODY = 64 * 1024 * 1024;
const MAX_BATCH_BODY = 256 * 1024 * 1024;      // the Message Batches limit
const MAX_RECORDS = 2000;
const MAX_REC_STRING = 4096;
const MAX_PATH_KEYS = 1000;

// ---------------------------------------------------------------- arguments

function usage(msg) {
    if (msg)
        process.stderr.write(`mock-api.js: ${msg}\n`);
    process.stderr.write('usage: node mock-api.js --cert FILE --key FILE [--host H] [--port P] ' +
        '[--control-port P] [--http2 | --plain] [--keys k1,k2] [--latency-ms N] [--max-lifetime-s S] ' +
        '[--exit-on-stdin-eof]\n');
    process.exit(2);
}

const opts = {
    cert: null, key: null, host: '127.0.0.1', port: 0, controlPort: 0,
    http2: false, plain: false, keys: null, latencyMs: 0, maxLifetimeS: 3600, exitOnStdinEof: false,
};
{
    const argv = process.argv.slice(2);
    for (let i = 0; i < argv.length; i++) {
        let a = argv[i];
        let v;
        const eq = a.indexOf('=');
        if (a.startsWith('--') && eq > 0) {
            v = a.slice(eq + 1);
            a = a.slice(0, eq);
        }
        const val = () => {
            if (v !== undefined)
                return v;
            if (i + 1 >= argv.length)
                usage(`missing value for ${a}`);
            return argv[++i];
        };
        const num = (s) => {
            const n = Number(s);
            if (!Number.isFinite(n) || n < 0)
                usage(`bad number for ${a}: ${s}`);
            return n;
        };
        switch (a) {
            case '--cert': opts.cert = val(); break;
            case '--key': opts.key = val(); break;
            case '--host': opts.host = val(); break;
            case '--port': opts.port = num(val()); break;
            case '--control-port': opts.controlPort = num(val()); break;
            case '--http2': opts.http2 = true; break;
            case '--plain': opts.plain = true; break;
            case '--keys': opts.keys = val().split(',').filter((k) => k.length > 0); break;
            case '--latency-ms': opts.latencyMs = num(val()); break;
            case '--max-lifetime-s': opts.maxLifetimeS = num(val()); break;
            case '--exit-on-stdin-eof': opts.exitOnStdinEof = true; break;
            case '-h': case '--help': usage(); break;
            default: usage(`unknown argument ${a}`);
        }
    }
    if (!opts.cert || !opts.key)
        usage('--cert and --key are required');
    if (opts.http2 && opts.plain)
        usage('--http2 and --plain exclude each other');
}

// -------------------------------------------------------------------- state

const now = () => performance.timeOrigin + performance.now();

const config = {
    latency_ms: opts.latencyMs,
    keys: opts.keys && opts.keys.length ? new Set(opts.keys) : null,
    rpm: null,
    ratelimit_headers: null,
    batch_delay_ms: 1000,
    batch_status: null,         // hostile batches: see below
    batch_counts: null,
    batch_results_bps: 5,
    hang_handshakes: 0,         // the next N connections never get a ServerHello
    models_page_size: null,     // a server may return fewer models than asked
    canned: false,              // Messages answered at once, unchecked (the worker's capacity)
    model_overrides: null,      // structured output: see below
};
const STREAM_DEFAULTS = {
    stream_chunk_chars: 8,      // code points per text/thinking/input_json delta
    stream_write_bytes: 0,      // > 0: each event goes out in writes of this many bytes
    stream_delay_ms: 0,         // between the events of every stream
    ping_ms: 0,                 // > 0: a ping every ping_ms while a stream waits
};
Object.assign(config, STREAM_DEFAULTS);

let stats;
let reqCounter = 0;
let records = [];           // ring buffer of the last MAX_RECORDS records
let recordsHead = 0;        // index of the oldest record once full
let faults = [];            // FIFO of {fault, remaining}
let bucket = null;          // token bucket when config.rpm is set

// live values that survive /reset
let openConnections = 0;
let concurrency = 0;

function zeroStats() {
    stats = {
        requests: 0,
        by_path: Object.create(null),
        by_status: Object.create(null),
        tcp_connections: 0,
        tls_handshakes: 0,
        tls_resumed: 0,
        max_concurrency: concurrency,
        http2_sessions: 0,
        rate_limited: 0,
        proxy_tunnels: 0,
        keys: Object.create(null),
        batches: 0,
        streams: 0,
    };
}
zeroStats();

function addRecord(rec) {
    if (records.length < MAX_RECORDS) {
        records.push(rec);
    } else {
        records[recordsHead] = rec;
        recordsHead = (recordsHead + 1) % MAX_RECORDS;
    }
}

function recordsInOrder() {
    if (records.length < MAX_RECORDS || recordsHead === 0)
        return records;
    return records.slice(recordsHead).concat(records.slice(0, recordsHead));
}

const keyHashCache = new Map();
function keyHash(k) {
    let h = keyHashCache.get(k);
    if (h === undefined) {
        h = crypto.createHash('sha256').update(k, 'utf8').digest('hex').slice(0, 16);
        if (keyHashCache.size > 10000)
            keyHashCache.clear();
        keyHashCache.set(k, h);
    }
    return h;
}

// --------------------------------------------------------------- rate limit

function setRpm(rpm) {
    if (rpm === null || rpm === undefined || rpm === 0) {
        config.rpm = null;
        bucket = null;
        return;
    }
    config.rpm = rpm;
    const cap = Math.max(1, Math.ceil(rpm / 60));
    bucket = { cap, rate: rpm / 60000 /* tokens per ms */, tokens: cap, last: now() };
}

function bucketRefill() {
    const t = now();
    bucket.tokens = Math.min(bucket.cap, bucket.tokens + (t - bucket.last) * bucket.rate);
    bucket.last = t;
    return t;
}

function rfc3339(ms) {
    return new Date(Math.ceil(ms / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// Returns {ok, headers, retryAfter}; consumes a token when consume is true.
function rateCheck(consume) {
    const t = bucketRefill();
    let ok = true;
    let retryAfter = 0;
    if (consume) {
        if (bucket.tokens >= 1) {
            bucket.tokens -= 1;
        } else {
            ok = false;
            retryAfter = Math.max(1, Math.ceil((1 - bucket.tokens) / bucket.rate / 1000));
        }
    }
    const full = t + (bucket.cap - bucket.tokens) / bucket.rate;
    const headers = {
        'anthropic-ratelimit-requests-limit': String(config.rpm),
        'anthropic-ratelimit-requests-remaining': String(Math.max(0, Math.floor(bucket.tokens))),
        'anthropic-ratelimit-requests-reset': rfc3339(full),
    };
    if (!ok)
        headers['retry-after'] = String(retryAfter);
    return { ok, headers };
}

// ------------------------------------------------------------------- errors

const ERROR_TYPES = {
    400: 'invalid_request_error',
    401: 'authentication_error',
    403: 'permission_error',
    404: 'not_found_error',
    405: 'invalid_request_error',
    413: 'request_too_large',
    429: 'rate_limit_error',
    500: 'api_error',
    529: 'overloaded_error',
};
const ERROR_MESSAGES = {
    invalid_request_error: 'Invalid request',
    authentication_error: 'invalid x-api-key',
    permission_error: 'Your API key does not have permission to use the specified resource.',
    not_found_error: 'Not found',
    request_too_large: 'Request exceeds the maximum allowed number of bytes.',
    rate_limit_error: 'Number of requests has exceeded your rate limit.',
    api_error: 'Internal server error',
    overloaded_error: 'Overloaded',
};

function errorType(status) {
    if (ERROR_TYPES[status])
        return ERROR_TYPES[status];
    if (status >= 500)
        return 'api_error';
    return 'invalid_request_error';
}

function errorBody(type, message) {
    return JSON.stringify({ type: 'error', error: { type, message } });
}

class ValidationError extends Error {}
function invalid(msg) {
    throw new ValidationError(msg);
}

// --------------------------------------------------------------- text utils

// Number of Unicode code points in s.
function charCount(s) {
    const n = s.length;
    let surrogatePairs = 0;
    for (let i = 0; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0xD800 && c <= 0xDBFF && i + 1 < n) {
            const d = s.charCodeAt(i + 1);
            if (d >= 0xDC00 && d <= 0xDFFF) {
                surrogatePairs++;
                i++;
            }
        }
    }
    return n - surrogatePairs;
}

function isObj(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// Text of a message's content: the string, or the concatenation of its text blocks.
function contentText(content) {
    if (typeof content === 'string')
        return content;
    let s = '';
    for (const b of content)
        if (b.type === 'text' && typeof b.text === 'string')
            s += b.text;
    return s;
}

// Validates a Messages API request body; returns {lastUser, inputChars, tool, stream}.
function validateMessages(body, needMaxTokens) {
    if (!isObj(body))
        invalid('Request body must be a JSON object');
    if (typeof body.model !== 'string' || body.model.length === 0)
        invalid(body.model === undefined ? 'model: Field required' : 'model: Input should be a non-empty string');
    if (needMaxTokens) {
        if (body.max_tokens === undefined)
            invalid('max_tokens: Field required');
        if (!Number.isInteger(body.max_tokens) || body.max_tokens < 1)
            invalid('max_tokens: Input should be an integer greater than or equal to 1');
    }
    if (body.messages === undefined)
        invalid('messages: Field required');
    if (!Array.isArray(body.messages))
        invalid('messages: Input should be a valid list');
    if (body.messages.length === 0)
        invalid('messages: at least one message is required');
    let chars = 0;
    let lastUser = '';
    body.messages.forEach((m, i) => {
        if (!isObj(m))
            invalid(`messages.${i}: Input should be a valid dictionary`);
        if (m.role !== 'user' && m.role !== 'assistant')
            invalid(`messages.${i}.role: Input should be 'user' or 'assistant'`);
        if (typeof m.content !== 'string') {
            if (!Array.isArray(m.content))
                invalid(`messages.${i}.content: Input should be a valid string or list of content blocks`);
            m.content.forEach((b, j) => {
                if (!isObj(b) || typeof b.type !== 'string')
                    invalid(`messages.${i}.content.${j}: Input should be a content block object with a string type`);
                if (b.type === 'text' && typeof b.text !== 'string')
                    invalid(`messages.${i}.content.${j}.text: Input should be a valid string`);
            });
        }
        if (Array.isArray(m.content))
            m.content.forEach((b, j) => {
                if (b.type === 'image')
                    validateImage(b, `messages.${i}.content.${j}`);
                validateCacheControl(b, `messages.${i}.content.${j}`);
            });
        const t = contentText(m.content);
        chars += charCount(t);
        if (m.role === 'user')
            lastUser = t;
    });
    if (body.system !== undefined) {
        if (typeof body.system === 'string') {
            chars += charCount(body.system);
        } else if (Array.isArray(body.system)) {
            body.system.forEach((b, j) => {
                if (!isObj(b) || b.type !== 'text' || typeof b.text !== 'string')
                    invalid(`system.${j}: Input should be a text block`);
                validateCacheControl(b, `system.${j}`);
                chars += charCount(b.text);
            });
        } else {
            invalid('system: Input should be a valid string or list of text blocks');
        }
    }
    if (body.temperature !== undefined) {
        if (typeof body.temperature !== 'number' || !(body.temperature >= 0 && body.temperature <= 1))
            invalid('temperature: Input should be a number between 0 and 1');
    }
    if (body.stream !== undefined && typeof body.stream !== 'boolean')
        invalid('stream: Input should be a valid boolean');
    const tool = validateTools(body);
    const format = validateOutputConfig(body);
    return { lastUser, inputChars: chars, tool, format, stream: body.stream === true };
}

const IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp']);

function validateImage(b, at) {
    const src = b.source;
    if (!isObj(src) || src.type !== 'base64')
        invalid(`${at}.source: Input should be a base64 image source`);
    if (!IMAGE_TYPES.has(src.media_type))
        invalid(`${at}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'`);
    if (typeof src.data !== 'string' || src.data.length === 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(src.data))
        invalid(`${at}.source.data: Input should be base64 data`);
}

function validateCacheControl(b, at) {
    if (b.cache_control === undefined || b.cache_control === null)
        return;
    if (!isObj(b.cache_control) || b.cache_control.type !== 'ephemeral')
        invalid(`${at}.cache_control: Input should be {"type": "ephemeral"}`);
}

// Checks tools and tool_choice; returns the tool a reply must call, if any.
function validateTools(body) {
    const names = new Map();
    if (body.tools !== undefined) {
        if (!Array.isArray(body.tools))
            invalid('tools: Input should be a valid list');
        body.tools.forEach((t, i) => {
            if (!isObj(t) || typeof t.name !== 'string' || !/^[a-zA-Z0-9_-]{1,128}$/.test(t.name))
                invalid(`tools.${i}.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'`);
            if (!isObj(t.input_schema) || t.input_schema.type !== 'object')
                invalid(`tools.${i}.input_schema.type: Input should be 'object'`);
            if (t.strict !== undefined && typeof t.strict !== 'boolean')
                invalid(`tools.${i}.strict: Input should be a valid boolean`);
            if (t.strict === true)
                strictSchema(t.input_schema, `tools.${i}.input_schema`);
            if (names.has(t.name))
                invalid(`tools: Tool names must be unique (${t.name})`);
            names.set(t.name, t);
        });
    }
    const c = body.tool_choice;
    if (c === undefined)
        return null;
    if (!isObj(c) || !['auto', 'any', 'tool', 'none'].includes(c.type))
        invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'");
    if (c.type === 'tool') {
        if (!names.has(c.name))
            invalid(`tool_choice.name: no tool named ${c.name}`);
        return names.get(c.name);
    }
    return null;
}

// A tool input that matches schema, drawn from text: an enum takes the
// value the text mentions (else its first), a string the text itself.
function toolInput(schema, text) {
    if (!isObj(schema))
        return null;
    if (Array.isArray(schema.enum) && schema.enum.length) {
        const hit = schema.enum.find((v) => typeof v === 'string' && text.includes(v));
        return hit !== undefined ? hit : schema.enum[0];
    }
    switch (schema.type) {
        case 'object': {
            const o = {};
            for (const [k, sub] of Object.entries(schema.properties || {}))
                o[k] = toolInput(sub, text);
            return o;
        }
        case 'array': return schema.items ? [toolInput(schema.items, text)] : [];
        case 'integer': return charCount(text);
        case 'number': return charCount(text) / 2;
        case 'boolean': return true;
        case 'null': return null;
        default: return text;
    }
}

// ---------------------------------------------------- structured output
//
// What the API accepts and does with strict structured output
// (output_config.format with type json_schema, tools with "strict": true):
// a schema with a keyword it refuses -- numeric and length bounds, minItems
// above 1, maxItems, uniqueItems, pattern, a format it does not know -- or an
// object without "additionalProperties": false is a 400
// invalid_request_error.  A reply fits the schema it was sent, and obeys
// the bounds written into a description as "{minimum: 1, maximum: 5}" (as
// the SDKs move them), as a model reading them would.
// [[mock:schema_break=KIND]] makes it break the caller's schema instead:
//   bound    every number of the top-level object is 76;
//   missing  the first required key of the top-level object is left out;
//   label    every enum of the top-level object gets "not-a-label".
// With output_config.format the reply is one text block holding the JSON.
// /config {"model_overrides": {"ID": {"structured_outputs": false,
// "max_input_tokens": N}}} changes what GET /v1/models/ID says (an ID the
// list does not have is then known too); null: the defaults.

const STRICT_REFUSED = new Set(['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum',
    'multipleOf', 'minLength', 'maxLength', 'pattern', 'maxItems', 'uniqueItems',
    'minProperties', 'maxProperties', 'patternProperties', 'propertyNames']);
const STRICT_FORMATS = new Set(['date-time', 'time', 'date', 'duration', 'email', 'hostname',
    'uri', 'ipv4', 'ipv6', 'uuid']);

function strictSchema(schema, at) {
    if (!isObj(schema))
        invalid(`${at}: Input should be a valid dictionary`);
    for (const [k, v] of Object.entries(schema)) {
        if (STRICT_REFUSED.has(k))
            invalid(`${at}: For 'strict' schemas, the '${k}' keyword is not supported`);
        if (k === 'minItems' && !(v === 0 || v === 1))
            invalid(`${at}: For 'strict' schemas, minItems only supports 0 or 1`);
        if (k === 'format' && !STRICT_FORMATS.has(v))
            invalid(`${at}: For 'strict' schemas, the format '${v}' is not supported`);
    }
    const object = schema.type === 'object' || (Array.isArray(schema.type) && schema.type.includes('object')) ||
        schema.properties !== undefined;
    if (object && schema.additionalProperties !== false)
        invalid(`${at}: For 'strict' schemas, 'additionalProperties' must be explicitly set to false for objects`);
    for (const [k, sub] of Object.entries(schema.properties || {}))
        strictSchema(sub, `${at}.properties.${k}`);
    if (schema.items !== undefined)
        strictSchema(schema.items, `${at}.items`);
    for (const key of ['anyOf', 'allOf'])
        if (Array.isArray(schema[key]))
            schema[key].forEach((sub, i) => strictSchema(sub, `${at}.${key}.${i}`));
}

// output_config: its format, if any (its other keys are checked elsewhere)
function validateOutputConfig(body) {
    const oc = body.output_config;
    if (oc === undefined || oc === null)
        return null;
    if (!isObj(oc))
        invalid('output_config: Input should be a valid dictionary');
    const f = oc.format;
    if (f === undefined || f === null)
        return null;
    if (!isObj(f) || f.type !== 'json_schema')
        invalid("output_config.format.type: Input should be 'json_schema'");
    for (const k of Object.keys(f))
        if (k !== 'type' && k !== 'schema')
            invalid(`output_config.format.${k}: Extra inputs are not permitted`);
    if (!isObj(f.schema))
        invalid('output_config.format.schema: Field required');
    strictSchema(f.schema, 'output_config.format.schema');
    if (body.tool_choice !== undefined && isObj(body.tool_choice) && body.tool_choice.type === 'tool')
        invalid('output_config.format cannot be combined with a forced tool_choice');
    return f;
}

// the bounds a description carries, as the SDKs write them
function describedBounds(schema) {
    const b = {};
    const m = /\{([^{}]*)\}\s*$/.exec(typeof schema.description === 'string' ? schema.description : '');
    if (m)
        for (const part of m[1].split(', ')) {
            const kv = /^([A-Za-z]+): (-?[0-9.eE+]+)$/.exec(part);
            if (kv)
                b[kv[1]] = Number(kv[2]);
        }
    return b;
}

// A value that fits a strict schema and the bounds in its descriptions.
function obeyBounds(schema, value) {
    if (!isObj(schema))
        return value;
    const b = describedBounds(schema);
    if (typeof value === 'number') {
        if (b.maximum !== undefined && value > b.maximum)
            value = b.maximum;
        if (b.minimum !== undefined && value < b.minimum)
            value = b.minimum;
    } else if (typeof value === 'string') {
        if (b.maxLength !== undefined)
            value = [...value].slice(0, b.maxLength).join('');
    } else if (Array.isArray(value)) {
        value = value.map((x) => obeyBounds(schema.items, x));
    } else if (isObj(value)) {
        for (const k of Object.keys(value))
            value[k] = obeyBounds((schema.properties || {})[k], value[k]);
    }
    return value;
}

function structuredValue(schema, text, d) {
    const value = obeyBounds(schema, toolInput(schema, text));
    const kind = d && d.schema_break;
    if (!kind || !isObj(value))
        return value;
    const props = schema.properties || {};
    if (kind === 'missing' && Array.isArray(schema.required) && schema.required.length)
        delete value[schema.required[0]];
    for (const k of Object.keys(value)) {
        if (kind === 'bound' && typeof value[k] === 'number')
            value[k] = 76;
        if (kind === 'label' && isObj(props[k]) && Array.isArray(props[k].enum))
            value[k] = 'not-a-label';
    }
    return value;
}

function formatMessage(ctx, v, d, model, cached) {
    const out = JSON.stringify(structuredValue(v.format.schema, v.lastUser, d));
    return {
        id: `msg_mock_${ctx.n}`,
        type: 'message',
        role: 'assistant',
        model: model || 'claude-mock',
        content: [{ type: 'text', text: out }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage: usageOf(v.inputChars, charCount(out), cached),
    };
}

function modelCapabilities(structured) {
    const yes = { supported: true };
    return {
        batch: yes, citations: yes, code_execution: yes, image_input: yes, pdf_input: yes,
        structured_outputs: { supported: structured },
        context_management: {
            supported: false, clear_thinking_20251015: null, clear_tool_uses_20250919: null, compact_20260112: null,
        },
        effort: {
            supported: true, low: yes, medium: yes, high: yes, max: yes, xhigh: null,
        },
        thinking: { supported: true, types: { enabled: yes, adaptive: { supported: false } } },
    };
}

function modelWithOverrides(m) {
    const o = config.model_overrides && config.model_overrides[m.id];
    if (!o)
        return m;
    const r = Object.assign({}, m, { capabilities: Object.assign({}, m.capabilities) });
    if (o.structured_outputs !== undefined)
        r.capabilities.structured_outputs = { supported: o.structured_outputs === true };
    if (o.max_input_tokens !== undefined)
        r.max_input_tokens = o.max_input_tokens;
    return r;
}

function controlStructured(c) {
    if (c.model_overrides === undefined)
        return;
    if (c.model_overrides !== null && !isObj(c.model_overrides))
        throw new Error('model_overrides must be an object or null');
    config.model_overrides = c.model_overrides;
}

// Prompt caching: a prefix up to a block marked cache_control is written
// the first time and read afterwards (until /reset).
const promptCache = new Set();

function cacheUsage(body) {
    const blocks = [];
    if (Array.isArray(body.system))
        blocks.push(...body.system);
    let marked = -1;
    blocks.forEach((b, i) => { if (isObj(b) && b.cache_control) marked = i; });
    if (marked < 0)
        return null;
    const prefix = blocks.slice(0, marked + 1).map((b) => b.text).join('');
    const key = crypto.createHash('sha256').update(String(body.model) + '\0' + prefix).digest('hex');
    const n = tokens(charCount(prefix));
    if (promptCache.has(key))
        return { chars: charCount(prefix), usage: { cache_creation_input_tokens: 0, cache_read_input_tokens: n } };
    promptCache.add(key);
    return { chars: charCount(prefix), usage: { cache_creation_input_tokens: n, cache_read_input_tokens: 0 } };
}

const tokens = (chars) => Math.max(1, Math.ceil(chars / 4));

// Parses [[mock:...]] directives out of text.
const DIRECTIVE_RE = /\[\[mock:([a-z_]+)(?:=([^\]]*))?\]\]/g;
function parseDirectives(text) {
    if (text.indexOf('[[mock:') < 0)
        return null;
    const d = {};
    let m;
    DIRECTIVE_RE.lastIndex = 0;
    while ((m = DIRECTIVE_RE.exec(text)) !== null) {
        const name = m[1];
        const arg = m[2];
        switch (name) {
            case 'delay': d.delay_ms = Number(arg) || 0; break;
            case 'status': d.status = parseInt(arg, 10) || 500; break;
            case 'hang': d.hang = true; break;
            case 'reset': d.reset = true; break;
            case 'malformed': d.malformed = true; break;
            case 'truncate': d.truncate = true; break;
            case 'batch_errored': d.batch_errored = true; break;
            case 'batch_expired': d.batch_expired = true; break;
            case 'batch_malformed': d.batch_malformed = true; break;
            // hostile batches (see below)
            case 'batch_usage': d.batch_usage = String(arg || ''); break;
            case 'batch_model': d.batch_model = String(arg || ''); break;
            case 'batch_escape': d.batch_escape = true; break;
            case 'batch_huge': d.batch_huge = Math.max(0, parseInt(arg, 10) || 0); break;
            case 'batch_slow': d.batch_slow = Math.max(0, parseInt(arg, 10) || 0); break;
            case 'no_tool': d.no_tool = true; break;
            case 'schema_break': d.schema_break = String(arg || 'bound'); break;
            case 'rich': d.rich = true; break;
            // billing_error (issue 27): see billingError
            case 'billing': d.billing = parseInt(arg, 10) || 400; break;
            // prefetch tests (issue 28): [[mock:error_message=TEXT]] is the
            // message of the error [[mock:status=N]] sends, so a test can
            // tell which row's error a statement raised
            case 'error_message': d.error_message = String(arg || ''); break;
            // the stream_* and ping directives only matter when the request streams
            case 'stream_delay': d.stream_delay_ms = Math.max(0, Number(arg) || 0); break;
            case 'stream_pause': d.stream_pause_ms = Math.max(0, Number(arg) || 0); break;
            case 'ping': d.ping_ms = Math.max(0, Number(arg) || 0); break;
            case 'stream_error': {
                const at = String(arg || '').split('@');
                d.stream_error = at[0] || 'overloaded_error';
                d.stream_error_after = Math.max(0, parseInt(at[1], 10) || 0);
                break;
            }
            case 'stream_cut': d.stream_cut_after = Math.max(0, parseInt(arg, 10) || 0); break;
            case 'stream_no_stop': d.stream_no_stop = true; break;
            default: break;
        }
    }
    return d;
}

// ------------------------------------------------------------------- models

const MODELS = [
    { type: 'model', id: 'claude-sonnet-4-6', display_name: 'Claude Sonnet 4.6', created_at: '2026-02-17T00:00:00Z' },
    { type: 'model', id: 'claude-opus-4-5', display_name: 'Claude Opus 4.5', created_at: '2025-11-24T00:00:00Z' },
    { type: 'model', id: 'claude-haiku-4-5', display_name: 'Claude Haiku 4.5', created_at: '2025-10-15T00:00:00Z' },
    { type: 'model', id: 'claude-sonnet-4-5', display_name: 'Claude Sonnet 4.5', created_at: '2025-09-29T00:00:00Z' },
    { type: 'model', id: 'claude-opus-4-1', display_name: 'Claude Opus 4.1', created_at: '2025-08-05T00:00:00Z' },
].map((m) => Object.assign(m, {
    max_input_tokens: 200000, max_tokens: 64000,
    capabilities: modelCapabilities(true),
}));

// ------------------------------------------------------------ the API server

const noop = () => {};
const MALFORMED_BODY = '{"id": "msg_broken", "content": [';

// Deep copy of a parsed body for the request log: strings longer than
// MAX_REC_STRING are cut, and at most MAX_REC_CHARS characters of strings are
// kept per record in all (later strings become ""); either sets rec._truncated.
// When budget.items is set (message batch requests), at most that many array
// elements are kept in all (also sets rec._truncated).
const MAX_REC_CHARS = 65536;
const MAX_REC_BATCH_ITEMS = 1000;
function truncForRecord(v, rec, budget) {
    if (budget === undefined)
        budget = { left: MAX_REC_CHARS };
    if (typeof v === 'string') {
        const keep = Math.min(v.length, MAX_REC_STRING, budget.left);
        budget.left -= keep;
        if (keep < v.length) {
            rec._truncated = true;
            return v.slice(0, keep);
        }
        return v;
    }
    if (Array.isArray(v)) {
        if (budget.items === undefined)
            return v.map((x) => truncForRecord(x, rec, budget));
        const out = [];
        for (const x of v) {
            if (budget.items <= 0) {
                rec._truncated = true;
                break;
            }
            budget.items--;
            out.push(truncForRecord(x, rec, budget));
        }
        return out;
    }
    if (v !== null && typeof v === 'object') {
        const o = {};
        for (const k of Object.keys(v))
            o[k] = truncForRecord(v[k], rec, budget);
        return o;
    }
    return v;
}

const sessionSockets = new WeakMap();   // http2 session -> TLSSocket
let lastSecureSocket = null;

function tlsSocketOf(ctx) {
    if (ctx.req.httpVersionMajor === 2) {
        const s = ctx.req.stream && ctx.req.stream.session;
        return s ? sessionSockets.get(s) : null;
    }
    return ctx.req.socket;
}

// Abruptly destroys the connection carrying ctx (RST when possible).
function killConnection(ctx, rst) {
    const tls = tlsSocketOf(ctx);
    try {
        const raw = tls && tls._parent;
        if (rst && raw && typeof raw.resetAndDestroy === 'function' && !raw.destroyed) {
            raw.resetAndDestroy();
            if (tls && !tls.destroyed)
                tls.destroy();
            return;
        }
        if (tls) {
            tls.destroy();
            if (raw && !raw.destroyed)
                raw.destroy();
            return;
        }
    } catch (e) {
        // fall through
    }
    try {
        if (ctx.req.stream)
            ctx.req.stream.session.destroy();
        else
            ctx.res.destroy();
    } catch (e) { /* ignore */ }
}

function countStatus(ctx, status) {
    ctx.rec.status = status;
    stats.by_status[status] = (stats.by_status[status] || 0) + 1;
}

function baseHeaders(ctx) {
    const h = { 'request-id': ctx.reqId };
    if (config.ratelimit_headers)
        Object.assign(h, config.ratelimit_headers);
    if (ctx.extraHeaders)
        Object.assign(h, ctx.extraHeaders);
    return h;
}

function send(ctx, status, body, headers) {
    if (ctx.closed || ctx.responded)
        return;
    ctx.responded = true;
    countStatus(ctx, status);
    const h = baseHeaders(ctx);
    h['content-type'] = 'application/json';
    if (headers)
        Object.assign(h, headers);
    h['content-length'] = Buffer.byteLength(body);
    if (ctx.fault && ctx.fault.trailers !== undefined)
        delete h['content-length'];     // trailers need chunked over HTTP/1.1
    if (ctx.sendTwice !== undefined)
        return sendTwice(ctx, status, body, h);
    try {
        wireEarlyHints(ctx);
        ctx.res.writeHead(status, h);
        wireTrailers(ctx);
        ctx.res.end(body);
        // over for the server now, even if the TLS write completes later
        if (ctx.done)
            ctx.done();
    } catch (e) {
        process.stderr.write(`mock-api.js: cannot send response: ${e.message}\n`);
        killConnection(ctx, false);
    }
}

function sendError(ctx, status, type, message, headers) {
    send(ctx, status, errorBody(type || errorType(status), message || ERROR_MESSAGES[type || errorType(status)] || 'error'), headers);
}

function doTruncate(ctx, status, body, headers) {
    if (ctx.closed || ctx.responded)
        return;
    ctx.responded = true;
    countStatus(ctx, status);
    const buf = Buffer.from(body, 'utf8');
    const h = baseHeaders(ctx);
    h['content-type'] = 'application/json';
    if (headers)
        Object.assign(h, headers);
    h['content-length'] = buf.length + 16;
    try {
        ctx.res.writeHead(status, h);
        ctx.res.write(buf.subarray(0, buf.length >> 1), () => setImmediate(() => killConnection(ctx, false)));
    } catch (e) {
        killConnection(ctx, false);
    }
}

function doReset(ctx) {
    if (ctx.closed || ctx.responded)
        return;
    ctx.responded = true;
    ctx.rec.outcome = 'reset';
    killConnection(ctx, true);
}

function later(ctx, ms, fn) {
    if (!(ms > 0))
        return fn();
    const t = setTimeout(() => {
        ctx.timers.delete(t);
        if (!ctx.closed)
            fn();
    }, ms);
    ctx.timers.add(t);
}

// Extra headers requested by a fault.
function faultHeaders(f) {
    const h = {};
    if (f.retry_after !== undefined && f.retry_after !== null)
        h['retry-after'] = String(f.retry_after);
    if (f.retry_after_ms !== undefined && f.retry_after_ms !== null)
        h['retry-after-ms'] = String(f.retry_after_ms);
    if (f.should_retry !== undefined && f.should_retry !== null)
        h['x-should-retry'] = String(f.should_retry);
    if (isObj(f.headers))
        for (const k of Object.keys(f.headers))
            h[k.toLowerCase()] = String(f.headers[k]);
    return h;
}

function applyFault(ctx, f) {
    ctx.rec.fault = true;
    later(ctx, f.delay_ms, () => {
        const h = faultHeaders(f);
        if (wireFault(ctx, f))
            return;
        if (f.hang) {
            ctx.rec.outcome = 'hang';
            return;
        }
        if (f.reset)
            return doReset(ctx);
        if (f.raw_response_base64 !== undefined)
            return wireRaw(ctx, Buffer.from(String(f.raw_response_base64), 'base64'));
        if (f.malformed)
            return send(ctx, f.status || 200, MALFORMED_BODY, h);
        if (f.truncate) {
            const body = f.body !== undefined ? String(f.body) : successBody(ctx, 'truncated reply from the mock server');
            return doTruncate(ctx, f.status || 200, body, h);
        }
        if (f.body_base64 !== undefined)     // raw bytes, valid UTF-8 or not
            return send(ctx, f.status || 200, Buffer.from(String(f.body_base64), 'base64'), h);
        if (f.body !== undefined)
            return send(ctx, f.status || 200, typeof f.body === 'string' ? f.body : JSON.stringify(f.body), h);
        if (f.status)
            return sendError(ctx, f.status, f.error_type, f.message, h);
        normal(ctx);
    });
}

// ------------------------------------ wire faults: 103, trailers, raw bytes
//
// Fault fields of this block (the headers of issue 24):
//   raw_response_base64  these bytes, exactly, on the connection (HTTP/1.1
//                        only), which then closes: what Node's http refuses
//                        to write (bare CR, \xff, escape sequences in a
//                        header value), interim responses, cut streams
//   early_hints          {name: value}: a 103 Early Hints with these headers
//                        before the reply (Node adds "link" if missing)
//   trailers             {name: value}: trailer fields after the reply's body
//                        (the body goes chunked over HTTP/1.1)
//   stream_keep_open     true: a stream stays open after message_stop, a
//                        ping every ping_ms (1000 when 0) until the client
//                        closes it (record: "stream_end": "kept_open")

function wireRaw(ctx, buf) {
    if (ctx.closed || ctx.responded)
        return;
    if (ctx.req.httpVersionMajor !== 1)
        return sendError(ctx, 500, 'api_error', 'raw_response_base64 needs HTTP/1.1');
    ctx.responded = true;
    const m = /^HTTP\/1\.[01] ([0-9]{3})/.exec(buf.subarray(0, 16).toString('latin1'));
    countStatus(ctx, m ? Number(m[1]) : 0);
    ctx.rec.outcome = 'raw';
    const sock = ctx.req.socket;
    try {
        sock.write(buf, () => sock.end());
    } catch (e) {
        killConnection(ctx, false);
    }
}

function wireEarlyHints(ctx) {
    const f = ctx.fault;
    if (!f || f.early_hints === undefined)
        return;
    const hints = { link: '</mock.css>; rel=preload; as=style' };
    for (const k of Object.keys(f.early_hints))
        hints[k.toLowerCase()] = String(f.early_hints[k]);
    ctx.res.writeEarlyHints(hints);
}

function wireTrailers(ctx) {
    const f = ctx.fault;
    if (!f || f.trailers === undefined)
        return;
    const t = {};
    for (const k of Object.keys(f.trailers))
        t[k.toLowerCase()] = String(f.trailers[k]);
    ctx.res.addTrailers(t);
}

function successBody(ctx, reply, inputChars, model, cached) {
    return messageJson(`msg_mock_${ctx.n}`, reply, inputChars, model, cached);
}

function usageOf(inputChars, outputChars, cached) {
    if (!cached)
        return { input_tokens: tokens(inputChars), output_tokens: tokens(outputChars) };
    return Object.assign({ input_tokens: tokens(Math.max(0, inputChars - cached.chars)) }, cached.usage,
        { output_tokens: tokens(outputChars) });
}

// The Message that POST /v1/messages answers with (an echo of reply).
function messageObj(id, reply, inputChars, model, cached) {
    if (inputChars === undefined)
        inputChars = reply.length;
    return {
        id,
        type: 'message',
        role: 'assistant',
        model: model || 'claude-mock',
        content: [{ type: 'text', text: reply }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage: usageOf(inputChars, charCount(reply), cached),
    };
}

function messageJson(id, reply, inputChars, model, cached) {
    return JSON.stringify(messageObj(id, reply, inputChars, model, cached));
}

// ---------------------------------------------------- semantic helpers
// claude_if, claude_summarize and claude_rank (src/functions/semantic.c)
// force the strict tools record_answer, record_summary and record_scores;
// their replies here are deterministic and checkable:
//   record_answer  result is true when a word of 4+ letters of the
//                  <condition> appears in the <text> (case-insensitive);
//   record_summary the capitalized words of the <text> blocks, in order,
//                  joined by spaces (so the order of the inputs shows);
//                  of more than 6, "First to Last" (bounded, and it
//                  composes: summaries of summaries keep first and last);
//   record_scores  per <candidate>, the share of the <query>'s words of 3+
//                  letters it contains, rounded to 3 decimals.
// [[mock:semantic_bad]] in the message breaks the reply: result "yes", a
// summary 42, one score too few.
function semanticBlocks(text, tag) {
    const re = new RegExp(`<${tag}>\\n([\\s\\S]*?)\\n</${tag}>`, 'g');
    const out = [];
    let m;
    while ((m = re.exec(text)) !== null)
        out.push(m[1]);
    return out;
}

function semanticWords(text, min) {
    return (text.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((w) => w.length >= min);
}

// The input of a semantic tool, or null for any other tool.
function semanticToolInput(tool, text) {
    const bad = text.includes('[[mock:semantic_bad]]');
    switch (tool.name) {
        case 'record_answer': {
            const cond = semanticWords(semanticBlocks(text, 'condition').join(' '), 4);
            const words = new Set(semanticWords(semanticBlocks(text, 'text').join(' '), 1));
            return { result: bad ? 'yes' : cond.some((w) => words.has(w)) };
        }
        case 'record_summary': {
            const caps = semanticBlocks(text, 'text').join(' ').match(/(?<![\p{L}\p{N}])\p{Lu}[\p{L}\p{N}]*/gu) || [];
            const summary = caps.length <= 6 ? caps.join(' ') : `${caps[0]} to ${caps[caps.length - 1]}`;
            return { summary: bad ? 42 : summary };
        }
        case 'record_scores': {
            const q = new Set(semanticWords(semanticBlocks(text, 'query').join(' '), 3));
            const scores = semanticBlocks(text, 'candidate').map((c) => {
                const w = new Set(semanticWords(c, 3));
                let n = 0;
                q.forEach((x) => { if (w.has(x)) n++; });
                return q.size ? Math.round((n / q.size) * 1000) / 1000 : 0;
            });
            if (bad)
                scores.pop();
            return { scores };
        }
        default:
            return null;
    }
}
// ------------------------------------------------ end of semantic helpers

// A reply that calls the forced tool with an input that fits its schema.
function toolUseMessage(ctx, v, model, cached, d) {
    const semantic = semanticToolInput(v.tool, v.lastUser);
    const input = semantic !== null ? semantic
        : v.tool.strict === true ? structuredValue(v.tool.input_schema, v.lastUser, d)
        : toolInput(v.tool.input_schema, v.lastUser);
    const out = JSON.stringify(input);
    return {
        id: `msg_mock_${ctx.n}`,
        type: 'message',
        role: 'assistant',
        model: model || 'claude-mock',
        content: [{ type: 'tool_use', id: `toolu_mock_${ctx.n}`, name: v.tool.name, input }],
        stop_reason: 'tool_use',
        stop_sequence: null,
        usage: usageOf(v.inputChars, charCount(out), cached),
    };
}

// [[mock:rich]]: every content block type with awkward text in it.  The ids
// come from a hash of the prompt, not the request number, so the same
// request gets the same Message streamed or not.
function richMessage(v, model, cached) {
    const h = crypto.createHash('sha256').update(v.lastUser, 'utf8').digest();
    const hex = h.toString('hex');
    const thinking = 'Let me think about "this" \u2014 \u00fcn\u00efc\u00f6d\u00e9 \u{1F600} step by step.';
    const text = 'The answer, with a citation: \u00e9\u{1F600}\n\ttabs and \\ backslashes.';
    const input = {
        query: '\u00fcn\u00efc\u00f6d\u00e9 "quoted"',
        n: 3,
        nested: { a: [1, 2.5, true, null], b: '\u{1F600}' },
    };
    const content = [
        { type: 'thinking', thinking, signature: `sig_${hex}` },
        {
            type: 'redacted_thinking',
            data: Buffer.concat([h, crypto.createHash('sha256').update(h).digest()]).toString('base64'),
        },
        {
            type: 'text',
            text,
            citations: [
                {
                    type: 'char_location', cited_text: 'The answer', document_index: 0,
                    document_title: 'Mock document \u00e9', start_char_index: 0, end_char_index: 10,
                },
                {
                    type: 'char_location', cited_text: 'tabs and \\ backslashes', document_index: 1,
                    document_title: 'Second "doc" \u{1F600}', start_char_index: 33, end_char_index: 55,
                },
            ],
        },
        { type: 'tool_use', id: `toolu_${hex.slice(24, 48)}`, name: 'lookup', input },
    ];
    const outChars = charCount(thinking) + charCount(text) + charCount(JSON.stringify(input));
    const usage = cached ? usageOf(v.inputChars, outChars, cached)
        : {
            input_tokens: tokens(v.inputChars),
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            output_tokens: tokens(outChars),
        };
    return {
        id: `msg_${hex.slice(0, 24)}`,
        type: 'message',
        role: 'assistant',
        model: model || 'claude-mock',
        content,
        stop_reason: 'tool_use',
        stop_sequence: null,
        usage,
    };
}

// The Message a POST /v1/messages request gets, streamed or not.
function replyMessage(ctx, v, d, model, cached) {
    if (d && d.rich)
        return richMessage(v, model, cached);
    if (v.format)
        return formatMessage(ctx, v, d, model, cached);
    if (v.tool && !(d && d.no_tool))
        return toolUseMessage(ctx, v, model, cached, d);
    return messageObj(`msg_mock_${ctx.n}`, v.lastUser, v.inputChars, model, cached);
}

function parseBody(ctx) {
    if (ctx.parsed === undefined) {
        try {
            ctx.parsed = JSON.parse(ctx.bodyText);
            ctx.parseOk = true;
        } catch (e) {
            ctx.parsed = null;
            ctx.parseOk = false;
        }
    }
    return ctx.parseOk;
}

function checkAuth(ctx) {
    const k = ctx.req.headers['x-api-key'];
    if (typeof k !== 'string' || k.length === 0) {
        sendError(ctx, 401, 'authentication_error', 'x-api-key header is required');
        return false;
    }
    if (config.keys && !config.keys.has(k)) {
        sendError(ctx, 401, 'authentication_error', 'invalid x-api-key');
        return false;
    }
    if (!ctx.req.headers['anthropic-version']) {
        sendError(ctx, 400, 'invalid_request_error', 'anthropic-version: header is required');
        return false;
    }
    return true;
}

function handleMessages(ctx) {
    if (config.rpm) {
        // every /v1/messages response carries the rate limit headers
        ctx.extraHeaders = rateCheck(false).headers;
    }
    if (!checkAuth(ctx))
        return;
    if (config.rpm) {
        const r = rateCheck(true);
        ctx.extraHeaders = r.headers;
        if (!r.ok) {
            stats.rate_limited++;
            return sendError(ctx, 429, 'rate_limit_error',
                `Number of request tokens has exceeded your per-minute rate limit (${config.rpm} requests per minute).`);
        }
    }
    if (!parseBody(ctx))
        return sendError(ctx, 400, 'invalid_request_error', 'There was an issue with your request body: invalid JSON');
    let v;
    try {
        v = validateMessages(ctx.parsed, true);
    } catch (e) {
        if (e instanceof ValidationError)
            return sendError(ctx, 400, 'invalid_request_error', e.message);
        throw e;
    }
    const model = ctx.parsed.model;
    const d = parseDirectives(v.lastUser);
    const cached = cacheUsage(ctx.parsed);
    const respond = () => {
        const m = replyMessage(ctx, v, d, model, cached);
        if (v.stream)
            return startStream(ctx, m, streamOptions(ctx, d));
        send(ctx, 200, JSON.stringify(m));
    };
    if (!d)
        return respond();
    later(ctx, d.delay_ms, () => {
        if (d.hang) {
            ctx.rec.outcome = 'hang';
            return;
        }
        if (d.reset)
            return doReset(ctx);
        if (d.malformed)
            return send(ctx, 200, MALFORMED_BODY);
        if (d.truncate)
            return doTruncate(ctx, 200, successBody(ctx, v.lastUser, v.inputChars, model));
        if (d.status && d.status !== 200)
            return sendError(ctx, d.status, undefined, d.error_message);
        if (d.billing)
            return billingError(ctx, d.billing);
        respond();
    });
}

// ---- billing_error (issue 27) ------------------------------------------
// [[mock:billing=N]]: the API's billing_error (out of credits, a spend limit
// reached) with HTTP status N, whatever N is (the API has sent it as 400,
// 402, 403 and 429).  Every attempt of the request gets it again, as with
// the same key.  The reply also carries everything a client could take for
// a rate limit or an invitation to retry -- retry-after, x-should-retry:
// true, and an anthropic-ratelimit header saying no request remains for 30
// seconds -- so that a client that retries it, or pauses other requests
// for it, is seen doing so (the mock's records, claude_stats).
function billingError(ctx, status) {
    const reset = new Date(Date.now() + 30000).toISOString();
    sendError(ctx, status, 'billing_error',
        'Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.',
        {
            'retry-after': '2', 'x-should-retry': 'true',
            'anthropic-ratelimit-requests-remaining': '0', 'anthropic-ratelimit-requests-reset': reset,
        });
}

// ------------------------------------------------------ streaming (SSE)
//
// A streamed reply is the event sequence of the real API for exactly the
// Message the same request gets unstreamed.  The events come from a
// generator, so a long echo is never held as events all at once.

const SSE_PING = 'event: ping\ndata: {"type":"ping"}\n\n';

function sseEvent(name, data) {
    return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}

// Splits s into pieces of n code points (never inside a surrogate pair).
function chunkChars(s, n) {
    const out = [];
    let start = 0;
    let count = 0;
    for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0xD800 && c <= 0xDBFF && i + 1 < s.length) {
            const d = s.charCodeAt(i + 1);
            if (d >= 0xDC00 && d <= 0xDFFF)
                i++;
        }
        if (++count === n) {
            out.push(s.slice(start, i + 1));
            start = i + 1;
            count = 0;
        }
    }
    if (start < s.length)
        out.push(s.slice(start));
    return out;
}

// Yields [name, data] for each event of msg, in the real API's order.
function* streamEvents(msg, n) {
    const usage0 = Object.assign({}, msg.usage, { output_tokens: 1 });
    yield ['message_start', {
        type: 'message_start',
        message: Object.assign({}, msg, { content: [], stop_reason: null, stop_sequence: null, usage: usage0 }),
    }];
    yield ['ping', { type: 'ping' }];
    for (let i = 0; i < msg.content.length; i++) {
        const b = msg.content[i];
        const delta = (d) => ['content_block_delta', { type: 'content_block_delta', index: i, delta: d }];
        // the start block keeps the final block's key order, so a client
        // that fills it in gets the very same JSON
        let start = b;
        if (b.type === 'text')
            start = Object.assign({}, b, Array.isArray(b.citations) ? { text: '', citations: [] } : { text: '' });
        else if (b.type === 'tool_use')
            start = Object.assign({}, b, { input: {} });
        else if (b.type === 'thinking')
            start = Object.assign({}, b, { thinking: '', signature: '' });
        yield ['content_block_start', { type: 'content_block_start', index: i, content_block: start }];
        if (b.type === 'text') {
            for (const c of b.citations || [])
                yield delta({ type: 'citations_delta', citation: c });
            for (const t of chunkChars(b.text, n))
                yield delta({ type: 'text_delta', text: t });
        } else if (b.type === 'tool_use') {
            yield delta({ type: 'input_json_delta', partial_json: '' });     // as the real API does
            for (const t of chunkChars(JSON.stringify(b.input), n))
                yield delta({ type: 'input_json_delta', partial_json: t });
        } else if (b.type === 'thinking') {
            for (const t of chunkChars(b.thinking, n))
                yield delta({ type: 'thinking_delta', thinking: t });
            yield delta({ type: 'signature_delta', signature: b.signature });
        }
        yield ['content_block_stop', { type: 'content_block_stop', index: i }];
    }
    yield ['message_delta', {
        type: 'message_delta',
        delta: { stop_reason: msg.stop_reason, stop_sequence: msg.stop_sequence },
        usage: { output_tokens: msg.usage.output_tokens },
    }];
    yield ['message_stop', { type: 'message_stop' }];
}

// How this stream misbehaves: /config, then the directives, then the
// fault popped for this request (the fault wins).
function streamOptions(ctx, d) {
    const o = {
        delay: config.stream_delay_ms, pause: 0, ping: config.ping_ms,
        errType: null, errAfter: 0, cutAfter: null, noStop: false, keepOpen: false,
    };
    for (const s of [d, ctx.fault]) {
        if (!s)
            continue;
        if (s.stream_delay_ms !== undefined)
            o.delay = s.stream_delay_ms;
        if (s.stream_pause_ms !== undefined)
            o.pause = s.stream_pause_ms;
        if (s.ping_ms !== undefined)
            o.ping = s.ping_ms;
        if (s.stream_error !== undefined) {
            o.errType = s.stream_error;
            o.errAfter = s.stream_error_after || 0;
        }
        if (s.stream_cut_after !== undefined)
            o.cutAfter = s.stream_cut_after;
        if (s.stream_no_stop)
            o.noStop = true;
        if (s.stream_keep_open)
            o.keepOpen = true;
    }
    return o;
}

// Sends msg as server-sent events.  One res.write per event (or per
// stream_write_bytes piece); waits are ctx timers, so a client that goes
// away stops everything (onClose clears them and sets ctx.closed).
function startStream(ctx, msg, so) {
    if (ctx.closed || ctx.responded)
        return;
    ctx.responded = true;
    ctx.streaming = true;
    countStatus(ctx, 200);
    stats.streams++;
    const rec = ctx.rec;
    const res = ctx.res;
    rec.stream = true;
    rec.stream_deltas = 0;
    rec.stream_end = null;
    const h = baseHeaders(ctx);
    h['content-type'] = 'text/event-stream; charset=utf-8';
    h['cache-control'] = 'no-cache';
    const wb = config.stream_write_bytes;
    const events = streamEvents(msg, config.stream_chunk_chars);
    let idx = -1;           // index of the last event taken (pings during waits excluded)
    let deltas = 0;
    let pauseDone = !(so.pause > 0);
    let waitMs = 0;         // before the next event
    let ending = null;      // stream_end once the last event is written
    let pending = 0;        // writes not yet flushed
    let onFlushed = null;

    const flushed = () => {
        if (--pending === 0 && onFlushed) {
            const f = onFlushed;
            onFlushed = null;
            f();
        }
    };
    // Writes text; true when the caller may go on at once, else next() is
    // called later (after the pieces of stream_write_bytes, or on 'drain').
    const write = (text, next) => {
        if (wb > 0) {
            writePieces(Buffer.from(text, 'utf8'), 0, next);
            return false;
        }
        pending++;
        if (res.write(text, flushed))
            return true;
        res.once('drain', () => { if (!ctx.closed) next(); });
        return false;
    };
    const writePieces = (buf, off, next) => {
        if (ctx.closed)
            return;
        pending++;
        const ok = res.write(buf.subarray(off, off + wb), flushed);
        off += wb;
        const go = () => {
            if (ctx.closed)
                return;
            if (off < buf.length)
                writePieces(buf, off, next);
            else
                next();
        };
        if (ok)
            setImmediate(go);
        else
            res.once('drain', go);
    };
    // Waits ms, with a ping every so.ping ms meanwhile.
    const wait = (ms, next) => {
        if (so.ping > 0 && so.ping < ms) {
            later(ctx, so.ping, () => {
                const more = () => wait(ms - so.ping, next);
                if (write(SSE_PING, more))
                    more();
            });
            return;
        }
        later(ctx, ms, next);
    };
    const end = (how) => {
        rec.stream_end = how;
        if (how === 'stop' && so.keepOpen) {
            rec.stream_end = 'kept_open';
            const ping = () => later(ctx, so.ping > 0 ? so.ping : 1000, () => {
                if (write(SSE_PING, ping))
                    ping();
            });
            return ping();
        }
        res.end();
        if (ctx.done)
            ctx.done();
    };
    const cut = () => {
        rec.stream_end = 'cut';
        // let what was written reach the client first
        const kill = () => setImmediate(() => {
            if (ctx.closed)
                return;
            if (ctx.req.httpVersionMajor === 2 && res.stream)
                res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
            else
                killConnection(ctx, false);
        });
        if (pending === 0)
            kill();
        else
            onFlushed = kill;
    };
    const pump = () => {
        try {
            while (!ctx.closed) {
                if (ending !== null)
                    return end(ending);
                if (waitMs > 0) {
                    const ms = waitMs;
                    waitMs = 0;
                    return wait(ms, pump);
                }
                const ev = events.next().value;
                idx++;
                const last = ev[0] === 'message_stop';
                let text;
                // the faults take the place of the next event once N deltas
                // are out (of message_stop when the reply has fewer)
                if (idx >= 2 && so.errType !== null && (deltas >= so.errAfter || last)) {
                    text = sseEvent('error', {
                        type: 'error',
                        error: { type: so.errType, message: ERROR_MESSAGES[so.errType] || 'mock stream error' },
                    });
                    ending = 'error';
                } else if (idx >= 2 && so.cutAfter !== null && (deltas >= so.cutAfter || last)) {
                    return cut();
                } else if (last && so.noStop) {
                    return end('no_stop');
                } else {
                    text = sseEvent(ev[0], ev[1]);
                    if (last)
                        ending = 'stop';
                    if (ev[0] === 'content_block_delta') {
                        rec.stream_deltas = ++deltas;
                        if (!pauseDone) {
                            pauseDone = true;
                            waitMs += so.pause;
                        }
                    }
                    // no wait between message_start and its ping
                    if (idx >= 1)
                        waitMs += so.delay;
                }
                if (!write(text, pump))
                    return undefined;
            }
        } catch (e) {
            process.stderr.write(`mock-api.js: cannot stream: ${e.message}\n`);
            killConnection(ctx, false);
        }
        return undefined;
    };
    try {
        wireEarlyHints(ctx);
        res.writeHead(200, h);
    } catch (e) {
        process.stderr.write(`mock-api.js: cannot send response: ${e.message}\n`);
        return killConnection(ctx, false);
    }
    return pump();
}

function handleCountTokens(ctx) {
    if (!checkAuth(ctx))
        return;
    if (!parseBody(ctx))
        return sendError(ctx, 400, 'invalid_request_error', 'There was an issue with your request body: invalid JSON');
    try {
        // the real endpoint has no stream parameter
        if (isObj(ctx.parsed) && ctx.parsed.stream !== undefined)
            invalid('stream: Extra inputs are not permitted');
        const v = validateMessages(ctx.parsed, false);
        send(ctx, 200, JSON.stringify({ input_tokens: tokens(v.inputChars) }));
    } catch (e) {
        if (e instanceof ValidationError)
            return sendError(ctx, 400, 'invalid_request_error', e.message);
        throw e;
    }
}

function handleModels(ctx) {
    if (!checkAuth(ctx))
        return;
    const q = new URLSearchParams(ctx.query);
    let limit = 20;
    if (q.has('limit')) {
        limit = Number(q.get('limit'));
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
            return sendError(ctx, 400, 'invalid_request_error', 'limit: Input should be an integer between 1 and 1000');
    }
    if (config.models_page_size)
        limit = Math.min(limit, config.models_page_size);
    let start = 0;
    let end = MODELS.length;
    if (q.has('after_id')) {
        const i = MODELS.findIndex((m) => m.id === q.get('after_id'));
        if (i < 0)
            return sendError(ctx, 400, 'invalid_request_error', `after_id: unknown model ${q.get('after_id')}`);
        start = i + 1;
    }
    let data;
    let hasMore;
    if (q.has('before_id') && !q.has('after_id')) {
        const i = MODELS.findIndex((m) => m.id === q.get('before_id'));
        if (i < 0)
            return sendError(ctx, 400, 'invalid_request_error', `before_id: unknown model ${q.get('before_id')}`);
        end = i;
        const s = Math.max(0, end - limit);
        data = MODELS.slice(s, end);
        hasMore = s > 0;
    } else {
        data = MODELS.slice(start, start + limit);
        hasMore = start + limit < end;
    }
    send(ctx, 200, JSON.stringify({
        data,
        has_more: hasMore,
        first_id: data.length ? data[0].id : null,
        last_id: data.length ? data[data.length - 1].id : null,
    }));
}

function handleModel(ctx, id) {
    if (!checkAuth(ctx))
        return;
    let m = MODELS.find((x) => x.id === id);
    if (!m && config.model_overrides && isObj(config.model_overrides[id]))
        m = {
            type: 'model', id, display_name: id, created_at: '2025-01-01T00:00:00Z',
            max_input_tokens: 200000, max_tokens: 64000, capabilities: modelCapabilities(true),
        };
    if (!m)
        return sendError(ctx, 404, 'not_found_error', `model: ${id}`);
    send(ctx, 200, JSON.stringify(modelWithOverrides(m)));
}

// ----------------------------------------------------------- message batches
//
// Batches are kept in memory until /reset.  Each one ends batch_delay_ms
// (a /config key, read at creation) after it was created; its state is
// computed when it is looked at, so no timers are involved.  Per item, the
// last user message decides the outcome: [[mock:batch_errored]] -> errored,
// [[mock:batch_expired]] -> expired, otherwise succeeded with the reply that
// POST /v1/messages would give (id msg_mock_b<k>).  Other directives are
// ignored in batches.  A cancel makes the batch end 300 ms later with all
// its items canceled.

const BATCH_MAX_REQUESTS = 100000;
const BATCH_CANCEL_MS = 300;
const BATCH_EXPIRY_MS = 24 * 3600 * 1000;
const CUSTOM_ID_RE = /^[a-zA-Z0-9_-]{1,64}$/;
const ITEM_SUCCEEDED = 0;
const ITEM_ERRORED = 1;
const ITEM_EXPIRED = 2;
const BATCH_ITEM_ERROR = JSON.stringify({
    type: 'errored',
    error: {
        type: 'error',
        error: { type: 'invalid_request_error', message: 'mock batch item error' },
        request_id: null,
    },
});
const BATCH_RESULTS_CHUNK = 1000;   // lines per res.write

let batches = new Map();    // id -> batch, in creation order
let batchSeq = 0;           // survives /reset, so ids are never reused
let batchItemSeq = 0;       // for msg_mock_b<k>; survives /reset too

const isoTime = (ms) => new Date(Math.floor(ms)).toISOString();

// Validates a CreateMessageBatchParams body; returns the items as
// {custom_id, kind, text, inputChars, model}.
function validateBatch(body) {
    if (!isObj(body))
        invalid('Request body must be a JSON object');
    for (const k of Object.keys(body))
        if (k !== 'requests')
            invalid(`${k}: Extra inputs are not permitted`);
    const reqs = body.requests;
    if (reqs === undefined)
        invalid('requests: Field required');
    if (!Array.isArray(reqs))
        invalid('requests: Input should be a valid list');
    if (reqs.length === 0)
        invalid('requests: List should have at least 1 item after validation, not 0');
    if (reqs.length > BATCH_MAX_REQUESTS)
        invalid(`requests: List should have at most ${BATCH_MAX_REQUESTS} items after validation, not ${reqs.length}`);
    const seen = new Set();
    const items = new Array(reqs.length);
    for (let i = 0; i < reqs.length; i++) {
        const r = reqs[i];
        const at = `requests.${i}`;
        if (!isObj(r))
            invalid(`${at}: Input should be a valid dictionary`);
        for (const k of Object.keys(r))
            if (k !== 'custom_id' && k !== 'params')
                invalid(`${at}.${k}: Extra inputs are not permitted`);
        const cid = r.custom_id;
        if (cid === undefined)
            invalid(`${at}.custom_id: Field required`);
        if (typeof cid !== 'string')
            invalid(`${at}.custom_id: Input should be a valid string`);
        if (!CUSTOM_ID_RE.test(cid))
            invalid(`${at}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'`);
        if (seen.has(cid))
            invalid(`${at}.custom_id: Duplicate custom_id '${cid}'; custom_id values must be unique within a batch`);
        seen.add(cid);
        const params = r.params;
        if (params === undefined)
            invalid(`${at}.params: Field required`);
        if (!isObj(params))
            invalid(`${at}.params: Input should be a valid dictionary`);
        if (params.stream !== undefined && params.stream !== false)
            invalid(`${at}.params.stream: streaming is not supported for message batches`);
        let v;
        try {
            v = validateMessages(params, true);
        } catch (e) {
            if (e instanceof ValidationError)
                invalid(`${at}.params.${e.message}`);
            throw e;
        }
        const d = parseDirectives(v.lastUser);
        const kind = d && d.batch_errored ? ITEM_ERRORED : d && d.batch_expired ? ITEM_EXPIRED : ITEM_SUCCEEDED;
        items[i] = { custom_id: cid, kind, text: v.lastUser, inputChars: v.inputChars, model: params.model,
            malformed: !!(d && d.batch_malformed), hostile: hostileItem(d),
            structured: batchStructured(v, d, params.model) };
    }
    return items;
}

// Base URL of this server as the client addressed it.
function baseUrl(ctx) {
    const rh = ctx.req.headers;
    let host = rh[':authority'] || rh.host;
    if (typeof host !== 'string' || host.length === 0) {
        const a = api.address();
        host = `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    }
    return `https://${host}`;
}

// The MessageBatch object for b as of now (or as created, when fresh).
function batchView(b, ctx, fresh) {
    const t = now();
    const ended = !fresh && t >= b.endsAt;
    let counts;
    if (!ended)
        counts = { processing: b.items.length, succeeded: 0, errored: 0, canceled: 0, expired: 0 };
    else if (b.cancelAt !== null)
        counts = { processing: 0, succeeded: 0, errored: 0, canceled: b.items.length, expired: 0 };
    else
        counts = Object.assign({ processing: 0 }, b.counts);
    return {
        id: b.id,
        type: 'message_batch',
        processing_status: ended ? 'ended' : b.cancelAt !== null ? 'canceling' : config.batch_status || 'in_progress',
        request_counts: config.batch_counts ? Object.assign(counts, config.batch_counts) : counts,
        ended_at: ended ? isoTime(b.endsAt) : null,
        created_at: isoTime(b.createdAt),
        expires_at: isoTime(b.createdAt + BATCH_EXPIRY_MS),
        archived_at: null,
        cancel_initiated_at: b.cancelAt !== null ? isoTime(b.cancelAt) : null,
        results_url: ended ? `${baseUrl(ctx)}/v1/messages/batches/${b.id}/results` : null,
    };
}

function handleBatchCreate(ctx) {
    if (!checkAuth(ctx))
        return;
    if (!parseBody(ctx))
        return sendError(ctx, 400, 'invalid_request_error', 'There was an issue with your request body: invalid JSON');
    let items;
    try {
        items = validateBatch(ctx.parsed);
    } catch (e) {
        if (e instanceof ValidationError)
            return sendError(ctx, 400, 'invalid_request_error', e.message);
        throw e;
    }
    const counts = { succeeded: 0, errored: 0, canceled: 0, expired: 0 };
    for (const it of items) {
        if (it.kind === ITEM_ERRORED)
            counts.errored++;
        else if (it.kind === ITEM_EXPIRED)
            counts.expired++;
        else
            counts.succeeded++;
    }
    const t = now();
    const b = {
        id: `msgbatch_mock_${++batchSeq}`, items, counts, firstItem: batchItemSeq + 1,
        createdAt: t, endsAt: t + config.batch_delay_ms, cancelAt: null,
    };
    hostileBatch(b);
    batchItemSeq += items.length;
    batches.set(b.id, b);
    stats.batches++;
    send(ctx, 200, JSON.stringify(batchView(b, ctx, true)));
}

// The batch named in the path, after the key check; null once an error
// has been sent.
function findBatch(ctx, id) {
    if (!checkAuth(ctx))
        return null;
    const b = batches.get(id);
    if (!b)
        sendError(ctx, 404, 'not_found_error', `message_batch_id: no such message batch: ${id}`);
    return b || null;
}

function handleBatchGet(ctx, id) {
    const b = findBatch(ctx, id);
    if (b)
        send(ctx, 200, JSON.stringify(batchView(b, ctx)));
}

function handleBatchDelete(ctx, id) {
    const b = findBatch(ctx, id);
    if (!b)
        return;
    if (now() < b.endsAt)
        return sendError(ctx, 400, 'invalid_request_error',
            `message batch ${id} cannot be deleted while it is processing; cancel it first`);
    batches.delete(id);
    send(ctx, 200, JSON.stringify({ id, type: 'message_batch_deleted' }));
}

function handleBatchCancel(ctx, id) {
    const b = findBatch(ctx, id);
    if (!b)
        return;
    const t = now();
    if (t < b.endsAt && b.cancelAt === null) {
        b.cancelAt = t;
        b.endsAt = t + BATCH_CANCEL_MS;
    }
    send(ctx, 200, JSON.stringify(batchView(b, ctx)));
}

function batchResultLine(b, i) {
    const it = b.items[i];
    let result;
    if (b.cancelAt !== null)
        result = '{"type":"canceled"}';
    else if (it.kind === ITEM_ERRORED)
        result = BATCH_ITEM_ERROR;
    else if (it.kind === ITEM_EXPIRED)
        result = '{"type":"expired"}';
    else if (it.structured)
        result = `{"type":"succeeded","message":${JSON.stringify(Object.assign({}, it.structured,
            { id: `msg_mock_b${b.firstItem + i}` }))}}`;
    else
        result = `{"type":"succeeded","message":${hostileMessage(it, messageJson(`msg_mock_b${b.firstItem + i}`, it.text,
            it.inputChars, it.hostile.model || it.model))}}`;
    let line = `{"custom_id":${JSON.stringify(it.custom_id)},"result":${result}}`;
    if (it.hostile.escape)
        line = line.replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
    return `${it.malformed ? line.slice(0, line.length - 20) : line}\n`;
}

// ------------------------------ structured batch items (issue 27, bulk)
//
// A batch item that asks for structured output (output_config.format, or
// a forced tool marked strict: claude_enrich with labels or a schema)
// succeeds with the Message POST /v1/messages would give it, schema_break
// directives included; other items echo their text as before.
function batchStructured(v, d, model) {
    if (!v.format && !(v.tool && v.tool.strict === true))
        return null;
    return replyMessage({ n: 'b' }, v, d, model, false);
}

// ------------------------------------------- hostile batches (issue 24)
//
// What a hostile or broken server does to Message Batches, for the tests
// of the database worker's batch handling:
//   config "batch_status": the processing_status of every batch that has
//     not ended, the creation reply included, in place of "in_progress"
//     (a status the client does not know, such as "validating");
//   config "batch_counts": members laid over every batch's request_counts
//     (numbers out of range: 2147483647, -5, 1.5);
//   config "batch_results_bps": bytes a second of a slow download (5);
//   item directives, for its result line: [[mock:batch_usage=LITERAL]] its
//     usage.input_tokens written as LITERAL (1.5, 3e9, -1000000, "x");
//     [[mock:batch_model=NAME]] its Message names that model;
//     [[mock:batch_escape]] every non-ASCII character of the line as a
//     \uXXXX escape;
//   and for the whole batch (the largest of its items):
//     [[mock:batch_huge=BYTES]] its results are followed by BYTES bytes of
//     blank lines (1 KiB each);
//     [[mock:batch_slow=N]] its first N results downloads trickle at
//     batch_results_bps until the client gives up (the later ones do not).
const HUGE_CHUNK = Buffer.from((' '.repeat(1023) + '\n').repeat(64));

function hostileItem(d) {
    if (!d)
        return {};
    return { usage: d.batch_usage, model: d.batch_model, escape: !!d.batch_escape,
        huge: d.batch_huge || 0, slow: d.batch_slow || 0 };
}

function hostileBatch(b) {
    b.huge = 0;
    b.slowLeft = 0;
    for (const it of b.items) {
        b.huge = Math.max(b.huge, it.hostile.huge || 0);
        b.slowLeft = Math.max(b.slowLeft, it.hostile.slow || 0);
    }
}

function hostileMessage(it, json) {
    if (it.hostile.usage === undefined)
        return json;
    return json.replace(/"usage":\{"input_tokens":\d+/, `"usage":{"input_tokens":${it.hostile.usage}`);
}

// The results of b at batch_results_bps, a few bytes at a time.
function trickleResults(ctx, b, h) {
    const res = ctx.res;
    let text = '';
    for (let i = 0; i < b.items.length; i++)
        text += batchResultLine(b, i);
    const buf = Buffer.from(text, 'utf8');
    const bps = Math.max(1, config.batch_results_bps || 5);
    let off = 0;
    ctx.rec.outcome = 'trickle';
    try {
        res.writeHead(200, h);
    } catch (e) {
        return killConnection(ctx, false);
    }
    const tick = () => {
        if (ctx.closed)
            return;
        const k = Math.min(bps, buf.length - off);
        try {
            res.write(buf.subarray(off, off + k));
        } catch (e) {
            return killConnection(ctx, false);
        }
        off += k;
        if (off >= buf.length) {
            res.end();
            return;
        }
        later(ctx, 1000, tick);
    };
    tick();
    return undefined;
}

function handleBatchResults(ctx, id) {
    const b = findBatch(ctx, id);
    if (!b)
        return;
    if (now() < b.endsAt)
        return sendError(ctx, 400, 'invalid_request_error',
            `results not available yet: message batch ${id} has not ended`);
    if (ctx.closed || ctx.responded)
        return;
    ctx.responded = true;
    countStatus(ctx, 200);
    const res = ctx.res;
    const h = baseHeaders(ctx);
    h['content-type'] = 'application/x-jsonl';
    const n = b.items.length;
    let i = 0;
    if (b.slowLeft > 0) {
        b.slowLeft--;
        return trickleResults(ctx, b, h);
    }
    let pad = b.huge;
    const pump = () => {
        try {
            while (!ctx.closed && i < n) {
                let chunk = '';
                const end = Math.min(n, i + BATCH_RESULTS_CHUNK);
                for (; i < end; i++)
                    chunk += batchResultLine(b, i);
                if (!res.write(chunk)) {
                    res.once('drain', pump);
                    return;
                }
            }
            while (!ctx.closed && pad > 0) {
                const k = Math.min(pad, HUGE_CHUNK.length);
                pad -= k;
                if (!res.write(HUGE_CHUNK.subarray(0, k))) {
                    res.once('drain', pump);
                    return;
                }
            }
            if (!ctx.closed) {
                res.end();
                if (ctx.done)
                    ctx.done();
            }
        } catch (e) {
            process.stderr.write(`mock-api.js: cannot send batch results: ${e.message}\n`);
            killConnection(ctx, false);
        }
    };
    try {
        res.writeHead(200, h);
    } catch (e) {
        process.stderr.write(`mock-api.js: cannot send response: ${e.message}\n`);
        return killConnection(ctx, false);
    }
    pump();
}

function handleBatchList(ctx) {
    if (!checkAuth(ctx))
        return;
    const q = new URLSearchParams(ctx.query);
    const all = [...batches.values()].reverse();     // newest first
    let limit = all.length;
    if (q.has('limit')) {
        limit = Number(q.get('limit'));
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
            return sendError(ctx, 400, 'invalid_request_error', 'limit: Input should be an integer between 1 and 1000');
    }
    if (config.models_page_size)
        limit = Math.min(limit, config.models_page_size);
    let data;
    let hasMore;
    if (q.has('after_id')) {
        const i = all.findIndex((b) => b.id === q.get('after_id'));
        if (i < 0)
            return sendError(ctx, 400, 'invalid_request_error', `after_id: unknown message batch ${q.get('after_id')}`);
        data = all.slice(i + 1, i + 1 + limit);
        hasMore = i + 1 + limit < all.length;
    } else if (q.has('before_id')) {
        const i = all.findIndex((b) => b.id === q.get('before_id'));
        if (i < 0)
            return sendError(ctx, 400, 'invalid_request_error', `before_id: unknown message batch ${q.get('before_id')}`);
        const s = Math.max(0, i - limit);
        data = all.slice(s, i);
        hasMore = s > 0;
    } else {
        data = all.slice(0, limit);
        hasMore = limit < all.length;
    }
    data = data.map((b) => batchView(b, ctx));
    send(ctx, 200, JSON.stringify({
        data,
        has_more: hasMore,
        first_id: data.length ? data[0].id : null,
        last_id: data.length ? data[data.length - 1].id : null,
    }));
}

// Routes /v1/messages/batches and below.
function routeBatches(ctx) {
    const p = ctx.path;
    const method = ctx.req.method;
    const notAllowed = () => sendError(ctx, 405, 'invalid_request_error', `Method ${method} not allowed for ${p}`);
    if (p === '/v1/messages/batches') {
        if (method === 'POST')
            return handleBatchCreate(ctx);
        if (method === 'GET')
            return handleBatchList(ctx);
        return notAllowed();
    }
    const parts = p.slice('/v1/messages/batches/'.length).split('/');
    let id;
    try {
        id = decodeURIComponent(parts[0]);
    } catch (e) {
        id = parts[0];
    }
    if (parts.length === 1 && id.length) {
        if (method === 'GET')
            return handleBatchGet(ctx, id);
        if (method === 'DELETE')
            return handleBatchDelete(ctx, id);
        return notAllowed();
    }
    if (parts.length === 2 && id.length && parts[1] === 'cancel')
        return method === 'POST' ? handleBatchCancel(ctx, id) : notAllowed();
    if (parts.length === 2 && id.length && parts[1] === 'results')
        return method === 'GET' ? handleBatchResults(ctx, id) : notAllowed();
    sendError(ctx, 404, 'not_found_error', `Not found: ${p}`);
}

function normal(ctx) {
    const p = ctx.path;
    const method = ctx.req.method;
    const route = (wanted, fn) => {
        if (method !== wanted)
            return sendError(ctx, 405, 'invalid_request_error', `Method ${method} not allowed for ${p}`);
        fn();
    };
    if (p === '/v1/messages')
        return route('POST', () => handleMessages(ctx));
    if (p === '/v1/messages/count_tokens')
        return route('POST', () => handleCountTokens(ctx));
    if (p === '/v1/models' || p === '/v1/models/')
        return route('GET', () => handleModels(ctx));
    if (p.startsWith('/v1/models/'))
        return route('GET', () => handleModel(ctx, decodeURIComponent(p.slice('/v1/models/'.length))));
    if (p === '/v1/messages/batches' || p.startsWith('/v1/messages/batches/'))
        return routeBatches(ctx);
    sendError(ctx, 404, 'not_found_error', `Not found: ${p}`);
}

function popFault() {
    if (faults.length === 0)
        return null;
    const q = faults[0];
    if (--q.remaining <= 0)
        faults.shift();
    return q.fault;
}

function onBody(ctx, buf) {
    const rec = ctx.rec;
    rec.body_bytes = buf.length;
    ctx.bodyText = buf.length ? buf.toString('utf8') : '';
    if (buf.length) {
        if (parseBody(ctx)) {
            rec.body = truncForRecord(ctx.parsed, rec, ctx.path.startsWith('/v1/messages/batches')
                ? { left: MAX_REC_CHARS, items: MAX_REC_BATCH_ITEMS } : undefined);
        } else if (ctx.bodyText.length > MAX_REC_STRING) {
            rec.body = ctx.bodyText.slice(0, MAX_REC_STRING);
            rec._truncated = true;
        } else {
            rec.body = ctx.bodyText;
        }
    }
    later(ctx, config.latency_ms, () => {
        if (ctx.fault)
            applyFault(ctx, ctx.fault);
        else
            normal(ctx);
    });
}

// The fast path of config.canned: a fixed Message, nothing checked or
// logged, so that the mock costs as little as it can next to the worker.
const CANNED_BODY = messageJson('msg_canned', 'canned', 6, 'claude-mock');
const CANNED_HEADERS = { 'content-type': 'application/json', 'request-id': 'req_canned' };

function onRequest(req, res) {
    const n = ++reqCounter;
    const url = req.url || '/';
    if (config.canned && req.method === 'POST' && url === '/v1/messages') {
        stats.requests++;
        req.on('data', noop);
        req.on('error', noop);
        res.on('error', noop);
        req.on('end', () => {
            res.writeHead(200, CANNED_HEADERS);
            res.end(CANNED_BODY);
        });
        return;
    }
    const qi = url.indexOf('?');
    const path = qi < 0 ? url : url.slice(0, qi);
    const headers = {};
    const rh = req.headers;
    for (const k in rh) {
        if (k.charCodeAt(0) === 58 /* ':' */)
            continue;
        headers[k] = rh[k];
    }
    const apiKey = rh['x-api-key'];
    if (typeof apiKey === 'string' && apiKey.length) {
        const h = keyHash(apiKey);
        headers['x-api-key'] = h;
        stats.keys[h] = (stats.keys[h] || 0) + 1;
    }
    const rec = {
        n, t_start: now(), t_end: null, method: req.method, path: url, status: null,
        headers, body: null, body_bytes: 0, http_version: req.httpVersion, stream: false,
    };
    addRecord(rec);
    stats.requests++;
    const pk = stats.by_path[path] !== undefined || Object.keys(stats.by_path).length < MAX_PATH_KEYS ? path : '(other)';
    stats.by_path[pk] = (stats.by_path[pk] || 0) + 1;
    if (++concurrency > stats.max_concurrency)
        stats.max_concurrency = concurrency;

    const ctx = {
        n, req, res, rec, path, query: qi < 0 ? '' : url.slice(qi + 1), reqId: `req_mock_${n}`,
        closed: false, responded: false, timers: new Set(), fault: popFault(), extraHeaders: null,
        parsed: undefined, parseOk: false, bodyText: '', streaming: false,
    };
    const onClose = () => {
        if (ctx.closed)
            return;
        ctx.closed = true;
        concurrency--;
        rec.t_end = now();
        if (!ctx.responded && !rec.outcome)
            rec.outcome = 'client_closed';
        if (ctx.streaming && !rec.stream_end)
            rec.stream_end = 'client_closed';
        for (const t of ctx.timers)
            clearTimeout(t);
        ctx.timers.clear();
    };
    ctx.done = onClose;
    res.on('close', onClose);
    res.on('error', noop);
    req.on('error', noop);
    if (onStalledConnection(ctx))
        return;

    const maxBody = path === '/v1/messages/batches' ? MAX_BATCH_BODY : MAX_BODY;
    const cl = rh['content-length'];
    if (cl !== undefined && Number(cl) > maxBody) {
        rec.body_bytes = Number(cl);
        if (req.httpVersionMajor === 1)
            res.shouldKeepAlive = false;
        sendError(ctx, 413, 'request_too_large', 'Request exceeds the maximum allowed number of bytes.');
        req.resume();
        return;
    }
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (c) => {
        if (tooLarge)
            return;
        size += c.length;
        if (size > maxBody) {
            tooLarge = true;
            chunks.length = 0;
            rec.body_bytes = size;
            if (req.httpVersionMajor === 1)
                res.shouldKeepAlive = false;
            sendError(ctx, 413, 'request_too_large', 'Request exceeds the maximum allowed number of bytes.');
            return;
        }
        chunks.push(c);
    });
    req.on('end', () => {
        if (tooLarge || ctx.closed)
            return;
        try {
            onBody(ctx, chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
        } catch (e) {
            process.stderr.write(`mock-api.js: internal error: ${e.stack}\n`);
            sendError(ctx, 500, 'api_error', 'mock internal error');
        }
    });
}

let cert;
let key;
try {
    cert = fs.readFileSync(opts.cert);
    key = fs.readFileSync(opts.key);
} catch (e) {
    usage(`cannot read certificate/key: ${e.message}`);
}

const api = opts.http2
    ? http2.createSecureServer({ cert, key, allowHTTP1: true, settings: { maxConcurrentStreams: 1000 } }, onRequest)
    : opts.plain ? http.createServer({ keepAlive: true }, onRequest)
    : https.createServer({ cert, key, keepAlive: true }, onRequest);

api.keepAliveTimeout = 60000;
api.headersTimeout = 65000;
api.requestTimeout = 0;
if ('timeout' in api)
    api.timeout = 0;
if (opts.http2)
    api.setTimeout(0);

// Before TLS sees a new connection: hold it, unread, to hang its handshake
// (TLS's own listener never gets it; the socket stays open until the
// client gives up).
const tlsListeners = api.listeners('connection');
const heldSockets = new Set();
api.removeAllListeners('connection');
api.on('connection', (sock) => {
    if (config.hang_handshakes > 0) {
        config.hang_handshakes--;
        heldSockets.add(sock);
        sock.on('error', noop);
        sock.once('close', () => heldSockets.delete(sock));
        return;
    }
    for (const l of tlsListeners)
        l.call(api, sock);
});
api.on('connection', (sock) => {
    stats.tcp_connections++;
    openConnections++;
    sock.on('error', noop);
    sock.once('close', () => { openConnections--; });
});
api.prependListener('secureConnection', (tls) => {
    lastSecureSocket = tls;
    stats.tls_handshakes++;
    try {
        if (tls.isSessionReused())
            stats.tls_resumed++;
    } catch (e) { /* ignore */ }
    tls.on('error', noop);
});
api.on('session', (session) => {
    stats.http2_sessions++;
    if (lastSecureSocket)
        sessionSockets.set(session, lastSecureSocket);
    session.on('error', noop);
    session.on('stream', (stream) => stream.on('error', noop));
});
api.on('tlsClientError', noop);
api.on('clientError', (err, sock) => {
    try {
        if (sock.writable && err.code === 'HPE_HEADER_OVERFLOW')
            sock.end('HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n');
        else if (sock.writable && err.code !== 'ECONNRESET')
            sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
        else
            sock.destroy();
    } catch (e) { /* ignore */ }
});
api.on('error', (e) => {
    process.stderr.write(`mock-api.js: API server error: ${e.message}\n`);
    process.exit(1);
});

// ------------------------------------------ connection faults (issue 24)
//
// Fault fields that play a server or proxy misusing its connections (see
// test/t/025_wire_connections.pl):
//   duplicate_after_ms: N  the reply (as the request would get it, HTTP/1.1
//       only) is written as raw bytes on the connection, and the same bytes
//       again N ms later (0: in the same write); the record gets
//       "duplicated": true once the copy is written.  Node then goes on with
//       the connection's next request as if nothing happened.
//   close_unanswered: true  the whole body is read, then the connection is
//       closed cleanly without an answer (TLS close_notify and FIN; HTTP/2:
//       the session is destroyed); the record's outcome is "closed".
//   stall_connection: true  this request and every later one on the same
//       connection (HTTP/2 session or HTTP/1.1 socket) are never answered;
//       the connection stays open (HTTP/2 PINGs are still answered); their
//       records' outcome is "stalled".
//   zero_streams: true  (HTTP/2) the session carrying the request
//       advertises SETTINGS_MAX_CONCURRENT_STREAMS 0, and once the client
//       acknowledged that, the request is answered normally.

const WIRE_FAULT_KEYS = ['duplicate_after_ms', 'close_unanswered', 'stall_connection', 'zero_streams'];
const stalledConnections = new WeakSet();

function checkWireFault(f) {
    const d = f.duplicate_after_ms;
    if (d !== undefined && !(typeof d === 'number' && d >= 0 && Number.isFinite(d)))
        throw new Error('duplicate_after_ms must be a number >= 0');
    for (const k of ['close_unanswered', 'stall_connection', 'zero_streams'])
        if (f[k] !== undefined && typeof f[k] !== 'boolean')
            throw new Error(`${k} must be a boolean`);
}

// The connection a request came on: its HTTP/2 session or its socket.
function connectionOf(ctx) {
    return ctx.req.httpVersionMajor === 2 ? ctx.req.stream && ctx.req.stream.session : ctx.req.socket;
}

// A request on a connection stalled by stall_connection: left unanswered.
function onStalledConnection(ctx) {
    const c = connectionOf(ctx);
    if (!c || !stalledConnections.has(c))
        return false;
    ctx.rec.outcome = 'stalled';
    ctx.req.resume();
    return true;
}

// Applies the connection faults of f; true if the request is dealt with.
function wireFault(ctx, f) {
    const c = connectionOf(ctx);
    if (f.stall_connection) {
        if (c)
            stalledConnections.add(c);
        ctx.rec.outcome = 'stalled';
        return true;
    }
    if (f.close_unanswered) {
        ctx.responded = true;
        ctx.rec.outcome = 'closed';
        try {
            if (ctx.req.httpVersionMajor === 2)
                ctx.req.stream.session.destroy();
            else
                ctx.req.socket.end();
        } catch (e) { /* ignore */ }
        return true;
    }
    if (f.zero_streams && ctx.req.httpVersionMajor === 2 && c) {
        // answered once the client has the new setting: it then holds it
        // when it sends its next request
        try {
            c.settings({ maxConcurrentStreams: 0 }, () => normal(ctx));
            return true;
        } catch (e) { /* answered at once */ }
    }
    if (f.duplicate_after_ms !== undefined && ctx.req.httpVersionMajor === 1)
        ctx.sendTwice = f.duplicate_after_ms;
    return false;
}

// send() for duplicate_after_ms: the response as raw bytes, twice.
function sendTwice(ctx, status, body, headers) {
    const sock = ctx.req.socket;
    let head = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] || 'Unknown'}\r\n`;
    for (const k of Object.keys(headers))
        head += `${k}: ${headers[k]}\r\n`;
    const raw = Buffer.concat([Buffer.from(head + 'connection: keep-alive\r\n\r\n', 'latin1'), Buffer.from(body)]);
    const copied = () => { ctx.rec.duplicated = true; };
    const ms = ctx.sendTwice;
    try {
        if (ms > 0) {
            sock.write(raw);
            setTimeout(() => {
                if (!sock.destroyed)
                    sock.write(raw, copied);
            }, ms);
        } else {
            sock.write(Buffer.concat([raw, raw]), copied);
        }
        // Node's response writes nothing: it goes on with the next request
        ctx.res._header = 'raw';
        ctx.res._headerSent = true;
        ctx.res.end();
        if (ctx.done)
            ctx.done();
    } catch (e) {
        killConnection(ctx, false);
    }
}

// -------------------------------------------------------- the control server
//
// POST /faults   object or array of fault objects, appended to the queue;
//                each request pops one (a fault with "count": N serves N).
//                Fields: status, error_type, message, retry_after,
//                retry_after_ms, should_retry, headers, delay_ms, hang, reset,
//                malformed, truncate, body, body_base64, count, and for
//                streamed replies (ignored when the request does not stream):
//                stream_error (error type: an error event),
//                stream_error_after (its N, default 0), stream_cut_after (N),
//                stream_no_stop (true), stream_pause_ms (MS) -- the same as
//                the stream directives above, which they override;
//                raw_response_base64, early_hints, trailers,
//                stream_keep_open (see "wire faults" above); and
//                duplicate_after_ms, close_unanswered, stall_connection,
//                zero_streams (see "connection faults" above).
// DELETE /faults clear the queue;  GET /faults  list it
// POST /config   {"latency_ms", "keys", "rpm", "ratelimit_headers", "batch_delay_ms",
//                "models_page_size", "hang_handshakes", "stream_chunk_chars" (code
//                points per delta, default 8), "stream_write_bytes" (> 0: every
//                event is written in pieces of this many bytes, default 0),
//                "stream_delay_ms" (between the events of every stream, default 0),
//                "ping_ms" (pings while a stream waits, default 0 = none),
//                "batch_status", "batch_counts", "batch_results_bps" (hostile
//                batches, see there)}; null puts a stream or hostile batch key
//                back to its default;  GET /config
// GET /stats (with "streams"), GET /requests?since=N, POST /reset, POST /shutdown
// (/reset also forgets all message batches and sets batch_delay_ms and the
// stream keys back to their defaults)
// A request record has "stream": true when it was answered with events, and
// then "stream_deltas" (content_block_delta events sent) and "stream_end":
// "stop", "error", "cut", "no_stop", "kept_open" or "client_closed".

const FAULT_KEYS = new Set(['status', 'error_type', 'message', 'retry_after', 'retry_after_ms', 'should_retry',
    'headers', 'delay_ms', 'hang', 'reset', 'malformed', 'truncate', 'body', 'body_base64', 'count',
    'stream_error', 'stream_error_after', 'stream_cut_after', 'stream_no_stop', 'stream_pause_ms',
    'raw_response_base64', 'early_hints', 'trailers', 'stream_keep_open',
    ...WIRE_FAULT_KEYS]);
const isCount = (v) => Number.isInteger(v) && v >= 0;

function checkFault(f) {
    if (!isObj(f))
        throw new Error('fault must be an object');
    for (const k of Object.keys(f))
        if (!FAULT_KEYS.has(k))
            throw new Error(`unknown fault field: ${k}`);
    if (f.status !== undefined && !(Number.isInteger(f.status) && f.status >= 100 && f.status <= 999))
        throw new Error('status must be an integer 100..999');
    if (f.count !== undefined && !(Number.isInteger(f.count) && f.count >= 1))
        throw new Error('count must be an integer >= 1');
    if (f.delay_ms !== undefined && !(typeof f.delay_ms === 'number' && f.delay_ms >= 0))
        throw new Error('delay_ms must be a number >= 0');
    if (f.headers !== undefined && !isObj(f.headers))
        throw new Error('headers must be an object');
    if (f.stream_error !== undefined && !(typeof f.stream_error === 'string' && /^[a-z_]+$/.test(f.stream_error)))
        throw new Error('stream_error must be an error type such as "overloaded_error"');
    if (f.stream_error_after !== undefined && !isCount(f.stream_error_after))
        throw new Error('stream_error_after must be an integer >= 0');
    if (f.stream_error_after !== undefined && f.stream_error === undefined)
        throw new Error('stream_error_after needs stream_error');
    if (f.stream_cut_after !== undefined && !isCount(f.stream_cut_after))
        throw new Error('stream_cut_after must be an integer >= 0');
    if (f.stream_no_stop !== undefined && typeof f.stream_no_stop !== 'boolean')
        throw new Error('stream_no_stop must be a boolean');
    if (f.stream_pause_ms !== undefined && !(typeof f.stream_pause_ms === 'number' && f.stream_pause_ms >= 0 &&
        Number.isFinite(f.stream_pause_ms)))
        throw new Error('stream_pause_ms must be a number >= 0');
    // wire faults
    if (f.raw_response_base64 !== undefined && typeof f.raw_response_base64 !== 'string')
        throw new Error('raw_response_base64 must be a base64 string');
    for (const k of ['early_hints', 'trailers'])
        if (f[k] !== undefined && !isObj(f[k]))
            throw new Error(`${k} must be an object`);
    if (f.stream_keep_open !== undefined && typeof f.stream_keep_open !== 'boolean')
        throw new Error('stream_keep_open must be a boolean');
    checkWireFault(f);
}

function controlConfig(c) {
    if (!isObj(c))
        throw new Error('config must be an object');
    const known = new Set(['latency_ms', 'keys', 'rpm', 'ratelimit_headers', 'batch_delay_ms', 'models_page_size',
        'hang_handshakes', 'canned', 'stream_chunk_chars', 'stream_write_bytes', 'stream_delay_ms', 'ping_ms',
        'batch_status', 'batch_counts', 'batch_results_bps',
        'model_overrides']);  // structured output
    for (const k of Object.keys(c))
        if (!known.has(k))
            throw new Error(`unknown config field: ${k}`);
    if (c.latency_ms !== undefined) {
        if (c.latency_ms !== null && !(typeof c.latency_ms === 'number' && c.latency_ms >= 0))
            throw new Error('latency_ms must be a number >= 0');
    }
    if (c.keys !== undefined && c.keys !== null &&
        !(Array.isArray(c.keys) && c.keys.every((k) => typeof k === 'string')))
        throw new Error('keys must be an array of strings or null');
    if (c.rpm !== undefined && c.rpm !== null && !(typeof c.rpm === 'number' && c.rpm >= 0))
        throw new Error('rpm must be a number >= 0 or null');
    if (c.ratelimit_headers !== undefined && c.ratelimit_headers !== null && !isObj(c.ratelimit_headers))
        throw new Error('ratelimit_headers must be an object or null');
    if (c.batch_delay_ms !== undefined && c.batch_delay_ms !== null &&
        !(typeof c.batch_delay_ms === 'number' && c.batch_delay_ms >= 0 && Number.isFinite(c.batch_delay_ms)))
        throw new Error('batch_delay_ms must be a number >= 0 or null (default 1000)');

    if (c.latency_ms !== undefined)
        config.latency_ms = c.latency_ms || 0;
    if (c.keys !== undefined)
        config.keys = c.keys && c.keys.length ? new Set(c.keys) : null;
    if (c.rpm !== undefined)
        setRpm(c.rpm);
    if (c.ratelimit_headers !== undefined) {
        if (c.ratelimit_headers === null) {
            config.ratelimit_headers = null;
        } else {
            const h = {};
            for (const k of Object.keys(c.ratelimit_headers))
                h[k.toLowerCase()] = String(c.ratelimit_headers[k]);
            config.ratelimit_headers = h;
        }
    }
    if (c.models_page_size !== undefined && c.models_page_size !== null &&
        !(Number.isInteger(c.models_page_size) && c.models_page_size >= 1))
        throw new Error('models_page_size must be an integer >= 1 or null');

    if (c.hang_handshakes !== undefined &&
        !(Number.isInteger(c.hang_handshakes) && c.hang_handshakes >= 0))
        throw new Error('hang_handshakes must be an integer >= 0');
    // null puts a stream key back to its default
    const isMs = (v) => typeof v === 'number' && v >= 0 && Number.isFinite(v);
    if (c.stream_chunk_chars !== undefined && c.stream_chunk_chars !== null &&
        !(Number.isInteger(c.stream_chunk_chars) && c.stream_chunk_chars >= 1))
        throw new Error('stream_chunk_chars must be an integer >= 1 or null (default 8)');
    if (c.stream_write_bytes !== undefined && c.stream_write_bytes !== null && !isCount(c.stream_write_bytes))
        throw new Error('stream_write_bytes must be an integer >= 0 or null (default 0)');
    if (c.stream_delay_ms !== undefined && c.stream_delay_ms !== null && !isMs(c.stream_delay_ms))
        throw new Error('stream_delay_ms must be a number >= 0 or null (default 0)');
    if (c.ping_ms !== undefined && c.ping_ms !== null && !isMs(c.ping_ms))
        throw new Error('ping_ms must be a number >= 0 or null (default 0)');

    if (c.batch_delay_ms !== undefined)
        config.batch_delay_ms = c.batch_delay_ms === null ? 1000 : c.batch_delay_ms;
    controlHostileBatches(c);
    if (c.models_page_size !== undefined)
        config.models_page_size = c.models_page_size;
    if (c.hang_handshakes !== undefined)
        config.hang_handshakes = c.hang_handshakes;
    if (c.canned !== undefined) {
        if (typeof c.canned !== 'boolean')
            throw new Error('canned must be a boolean');
        config.canned = c.canned;
    }
    controlStructured(c);
    for (const k of Object.keys(STREAM_DEFAULTS))
        if (c[k] !== undefined)
            config[k] = c[k] === null ? STREAM_DEFAULTS[k] : c[k];
}

// hostile batches: config keys, checked then set (null: back to the default)
function controlHostileBatches(c) {
    if (c.batch_status !== undefined && c.batch_status !== null && typeof c.batch_status !== 'string')
        throw new Error('batch_status must be a string or null');
    if (c.batch_counts !== undefined && c.batch_counts !== null && !isObj(c.batch_counts))
        throw new Error('batch_counts must be an object or null');
    if (c.batch_results_bps !== undefined && c.batch_results_bps !== null &&
        !(Number.isInteger(c.batch_results_bps) && c.batch_results_bps >= 1))
        throw new Error('batch_results_bps must be an integer >= 1 or null (default 5)');
    if (c.batch_status !== undefined)
        config.batch_status = c.batch_status || null;
    if (c.batch_counts !== undefined)
        config.batch_counts = c.batch_counts;
    if (c.batch_results_bps !== undefined)
        config.batch_results_bps = c.batch_results_bps || 5;
}

function configView() {
    return {
        latency_ms: config.latency_ms,
        keys: config.keys ? [...config.keys] : null,
        rpm: config.rpm,
        ratelimit_headers: config.ratelimit_headers,
        batch_delay_ms: config.batch_delay_ms,
        batch_status: config.batch_status,
        batch_counts: config.batch_counts,
        batch_results_bps: config.batch_results_bps,
        models_page_size: config.models_page_size,
        hang_handshakes: config.hang_handshakes,
        canned: config.canned,
        stream_chunk_chars: config.stream_chunk_chars,
        stream_write_bytes: config.stream_write_bytes,
        stream_delay_ms: config.stream_delay_ms,
        ping_ms: config.ping_ms,
    };
}

function statsView() {
    return {
        requests: stats.requests,
        by_path: stats.by_path,
        by_status: stats.by_status,
        tcp_connections: stats.tcp_connections,
        tls_handshakes: stats.tls_handshakes,
        tls_resumed: stats.tls_resumed,
        open_connections: openConnections,
        concurrency,
        max_concurrency: stats.max_concurrency,
        http2_sessions: stats.http2_sessions,
        rate_limited: stats.rate_limited,
        proxy_tunnels: stats.proxy_tunnels,
        keys: stats.keys,
        faults_queued: faults.reduce((a, q) => a + q.remaining, 0),
        batches: stats.batches,
        streams: stats.streams,
    };
}

function onControl(req, res) {
    const chunks = [];
    req.on('error', noop);
    res.on('error', noop);
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
        const reply = (status, obj) => {
            const body = JSON.stringify(obj) + '\n';
            res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
            res.end(body);
        };
        try {
            const url = new URL(req.url, 'http://localhost');
            const text = Buffer.concat(chunks).toString('utf8');
            const json = () => {
                if (text.trim() === '')
                    return {};
                try {
                    return JSON.parse(text);
                } catch (e) {
                    throw new Error(`invalid JSON: ${e.message}`);
                }
            };
            const route = `${req.method} ${url.pathname}`;
            switch (route) {
                case 'POST /faults': {
                    const b = json();
                    const list = Array.isArray(b) ? b : [b];
                    list.forEach(checkFault);
                    for (const f of list)
                        faults.push({ fault: f, remaining: f.count || 1 });
                    return reply(200, { queued: faults.length });
                }
                case 'DELETE /faults':
                    faults = [];
                    return reply(200, { queued: 0 });
                case 'GET /faults':
                    return reply(200, faults.map((q) => Object.assign({}, q.fault, { remaining: q.remaining })));
                case 'POST /config':
                    controlConfig(json());
                    return reply(200, configView());
                case 'GET /config':
                    return reply(200, configView());
                case 'GET /stats':
                    return reply(200, statsView());
                case 'GET /requests': {
                    const since = Number(url.searchParams.get('since') || 0) || 0;
                    return reply(200, recordsInOrder().filter((r) => r.n > since));
                }
                case 'POST /reset':
                    zeroStats();
                    faults = [];
                    records = [];
                    recordsHead = 0;
                    reqCounter = 0;
                    config.latency_ms = 0;
                    config.ratelimit_headers = null;
                    config.batch_delay_ms = 1000;
                    controlHostileBatches({ batch_status: null, batch_counts: null, batch_results_bps: null });
                    config.canned = false;
                    config.model_overrides = null;
                    config.models_page_size = null;
                    config.hang_handshakes = 0;
                    Object.assign(config, STREAM_DEFAULTS);
                    promptCache.clear();
                    batches = new Map();
                    setRpm(null);
                    return reply(200, { ok: true });
                case 'GET /health':
                    return reply(200, { ok: true });
                case 'POST /shutdown':
                    reply(200, { ok: true });
                    setImmediate(() => shutdown(0));
                    return undefined;
                default:
                    return reply(404, { error: `no such control endpoint: ${route}` });
            }
        } catch (e) {
            return reply(400, { error: e.message });
        }
    });
}

const control = http.createServer(onControl);
control.keepAliveTimeout = 60000;
// The control port doubles as an HTTP CONNECT proxy (to loopback only), so
// tests can prove that claude.proxy is used.
control.on('connect', (req, sock, head) => {
    const m = /^(127\.0\.0\.1|localhost|\[::1\]):(\d+)$/.exec(req.url || '');
    if (!m) {
        sock.end('HTTP/1.1 403 Forbidden\r\n\r\n');
        return;
    }
    stats.proxy_tunnels++;
    const up = net.connect(Number(m[2]), m[1].replace(/[\[\]]/g, ''), () => {
        sock.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head && head.length)
            up.write(head);
        up.pipe(sock);
        sock.pipe(up);
    });
    up.on('error', () => sock.destroy());
    sock.on('error', () => up.destroy());
});
control.on('clientError', (err, sock) => { try { sock.destroy(); } catch (e) { /* ignore */ } });
control.on('error', (e) => {
    process.stderr.write(`mock-api.js: control server error: ${e.message}\n`);
    process.exit(1);
});

// ------------------------------------------------------------------ process

function shutdown(code) {
    process.exit(code);
}

process.on('SIGTERM', () => shutdown(0));
process.on('SIGINT', () => shutdown(0));
process.on('SIGHUP', () => shutdown(0));
process.on('uncaughtException', (e) => {
    process.stderr.write(`mock-api.js: uncaught exception (continuing): ${e && e.stack}\n`);
});
process.stdout.on('error', noop);

if (opts.exitOnStdinEof) {
    process.stdin.on('end', () => shutdown(0));
    process.stdin.on('close', () => shutdown(0));
    process.stdin.on('error', () => shutdown(0));
    process.stdin.on('data', noop);
    process.stdin.resume();
}
if (opts.maxLifetimeS > 0) {
    setTimeout(() => {
        process.stderr.write(`mock-api.js: max lifetime of ${opts.maxLifetimeS} s reached, exiting\n`);
        shutdown(0);
    }, Math.min(opts.maxLifetimeS * 1000, 2147483647)).unref();
}

api.listen(opts.port, opts.host, () => {
    control.listen(opts.controlPort, '127.0.0.1', () => {
        process.stdout.write(JSON.stringify({
            port: api.address().port,
            control_port: control.address().port,
            pid: process.pid,
        }) + '\n');
    });
});
