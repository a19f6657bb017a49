// node-hl7-server (Node.js) answering every message with AA (res.sendResponse('AA')).
// Installed by bench/run.py into bench/node with `npm ci`. Run: node bench/servers/node_hl7_server.js --port N
'use strict';
const path = require('path');
const { Server } = require(path.join(__dirname, '..', 'node', 'node_modules', 'node-hl7-server'));

const port = Number(process.argv[process.argv.indexOf('--port') + 1]);
const server = new Server({ bindAddress: '127.0.0.1' });
server.createInbound({ port }, async (req, res) => { await res.sendResponse('AA'); });
process.on('SIGTERM', () => process.exit(0));
