// bench.js PORT CA_FILE [h2] [SECONDS] [CONCURRENCY] -- rough keep-alive throughput
// check of mock-api.js.  Prints one line: requests/s.
'use strict';
const https = require('https');
const http2 = require('http2');
const fs = require('fs');
const [port, caFile, mode, secs = '3', conc = '32'] = process.argv.slice(2);
const ca = fs.readFileSync(caFile);
const body = JSON.stringify({ model: 'claude-sonnet-4-6', max_tokens: 16, messages: [{ role: 'user', content: 'ping' }] });
const headers = { 'x-api-key': 'k1', 'anthropic-version': '2023-06-01', 'content-type': 'application/json' };
const until = Date.now() + Number(secs) * 1000;
let done = 0, errors = 0, running = 0;
const t0 = process.hrtime.bigint();
function finish() {
    if (--running > 0) return;
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(`${mode === 'h2' ? 'http2' : 'http/1.1'} concurrency ${conc}: ${done} requests in ${s.toFixed(2)} s = ${Math.round(done / s)} req/s, ${errors} errors`);
    process.exit(errors ? 1 : 0);
}
if (mode === 'h2') {
    const sess = http2.connect(`https://127.0.0.1:${port}`, { ca });
    const one = () => {
        if (Date.now() > until) return finish();
        const st = sess.request({ ':method': 'POST', ':path': '/v1/messages', ...headers, 'content-length': Buffer.byteLength(body) });
        let status = 0;
        st.on('response', (h) => { status = h[':status']; });
        st.on('data', () => {});
        st.on('end', () => { if (status === 200) done++; else errors++; one(); });
        st.on('error', () => { errors++; one(); });
        st.end(body);
    };
    for (let i = 0; i < Number(conc); i++) { running++; one(); }
} else {
    const agent = new https.Agent({ keepAlive: true, maxSockets: Number(conc), ca });
    const one = () => {
        if (Date.now() > until) return finish();
        const r = https.request({ host: '127.0.0.1', port, path: '/v1/messages', method: 'POST', agent, headers: { ...headers, 'content-length': Buffer.byteLength(body) } }, (res) => {
            res.on('data', () => {});
            res.on('end', () => { if (res.statusCode === 200) done++; else errors++; one(); });
        });
        r.on('error', () => { errors++; one(); });
        r.end(body);
    };
    for (let i = 0; i < Number(conc); i++) { running++; one(); }
}
