#!/usr/bin/env node
// delay-proxy.js -- a TCP proxy that holds every chunk --delay-ms in each
// direction, so that each round trip through it costs twice that (a new
// connection's TCP handshake included): what a far server costs, where tc
// netem is not available.
//
// usage: node delay-proxy.js --target HOST:PORT [--port 0] [--delay-ms 10]
//
// Prints one JSON line {"port":P} once it listens.  TLS passes through
// untouched; counts nothing (the mock behind it counts).  Exits when its
// stdin closes.
'use strict';

const net = require('net');

const opts = { port: 0, delay: 10, target: null };
for (let i = 2; i < process.argv.length; i++) {
    const a = process.argv[i];
    const v = process.argv[++i];
    if (a === '--port')
        opts.port = Number(v);
    else if (a === '--delay-ms')
        opts.delay = Number(v);
    else if (a === '--target')
        opts.target = v;
    else {
        process.stderr.write('usage: delay-proxy.js --target HOST:PORT [--port 0] [--delay-ms 10]\n');
        process.exit(2);
    }
}
if (!opts.target || !/^[^:]+:\d+$/.test(opts.target)) {
    process.stderr.write('delay-proxy.js: --target HOST:PORT is required\n');
    process.exit(2);
}
const [host, port] = opts.target.split(':');

// Everything from one side reaches the other delay ms later, in order,
// and not before notBefore: a new connection's first bytes wait for the
// TCP handshake's round trip too (SYN, SYN-ACK), as on a real network.
function forward(from, to, notBefore) {
    // one queue and one timer a direction: timers of different lengths
    // due in the same millisecond may fire in any order
    const queue = [];
    let timer = null;
    const pump = () => {
        timer = null;
        while (queue.length && queue[0].t <= Date.now())
            queue.shift().fn();
        if (queue.length)
            timer = setTimeout(pump, queue[0].t - Date.now());
    };
    const at = (fn) => {
        const t = Math.max(Date.now() + opts.delay, notBefore);
        notBefore = t;
        queue.push({ t, fn });
        if (!timer)
            timer = setTimeout(pump, t - Date.now());
    };
    from.on('data', (d) => at(() => { if (!to.destroyed) to.write(d); }));
    from.on('end', () => at(() => { if (!to.destroyed) to.end(); }));
    from.on('error', () => at(() => to.destroy()));
    from.on('close', () => at(() => to.destroy()));
}

const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), host);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    forward(client, upstream, Date.now() + 3 * opts.delay);
    forward(upstream, client, 0);
});
server.listen(opts.port, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
