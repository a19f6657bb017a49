// simple-hl7 (Node.js) answering every message with the ACK it builds itself (res.end()).
// The app is the one simple-hl7's README shows, minus the logging. Installed by bench/run.py
// into bench/node with `npm ci`. Run: node bench/servers/simple_hl7.js --port N
'use strict';
const net = require('net');
const path = require('path');
const hl7 = require(path.join(__dirname, '..', 'node', 'node_modules', 'simple-hl7'));

const port = Number(process.argv[process.argv.indexOf('--port') + 1]);

// simple-hl7 calls server.listen(port), which binds every interface; the benchmark stays on loopback.
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  return typeof args[0] === 'number' && args.length === 1 ? listen.call(this, args[0], '127.0.0.1') : listen.apply(this, args);
};

const app = hl7.tcp();
app.use((req, res, next) => res.end());
app.use((err, req, res, next) => { if (res) res.end(); });
app.start(port);
process.on('SIGTERM', () => process.exit(0));
