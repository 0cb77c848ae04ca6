// A bridge from tests/it/ui.rs to a page in headless Chromium, over the
// Chrome DevTools Protocol (Node 20.10+ with --experimental-websocket, or
// 22+). Usage: node --experimental-websocket ui_cdp.js DEVTOOLS_PORT
//
// It attaches to the browser's first page, then reads one JSON command per
// line on stdin and answers one JSON line on stdout:
//   {"eval": "expression"}        -> {"value": <its value, by value>}
//   {"block": ["*pattern*", ...]} -> {"ok": true} (requests matching fail)
// and ends when stdin closes. Errors are answered as {"error": "..."}.
'use strict';

const http = require('http');
const readline = require('readline');

function getJson(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, (r) => {
        let body = '';
        r.on('data', (c) => (body += c));
        r.on('end', () => {
          try {
            resolve(JSON.parse(body));
          } catch (e) {
            reject(e);
          }
        });
      })
      .on('error', reject);
  });
}

async function main() {
  const port = process.argv[2];
  const targets = await getJson(`http://127.0.0.1:${port}/json/list`);
  const page = targets.find((t) => t.type === 'page');
  if (!page) throw new Error('no page target');
  const ws = new WebSocket(page.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error('cannot connect to ' + page.webSocketDebuggerUrl));
  });
  let next = 0;
  const pending = new Map();
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.id !== undefined && pending.has(m.id)) {
      pending.get(m.id)(m);
      pending.delete(m.id);
    }
  };
  const send = (method, params) =>
    new Promise((resolve) => {
      const id = ++next;
      pending.set(id, resolve);
      ws.send(JSON.stringify({ id, method, params: params || {} }));
    });
  await send('Network.enable');

  const answer = (v) => process.stdout.write(JSON.stringify(v) + '\n');
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    try {
      const cmd = JSON.parse(line);
      if (typeof cmd.eval === 'string') {
        const r = await send('Runtime.evaluate', { expression: cmd.eval, returnByValue: true });
        if (r.error) answer({ error: r.error.message });
        else if (r.result.exceptionDetails) answer({ error: r.result.exceptionDetails.text });
        else answer({ value: r.result.result.value === undefined ? null : r.result.result.value });
      } else if (Array.isArray(cmd.block)) {
        const r = await send('Network.setBlockedURLs', { urls: cmd.block });
        answer(r.error ? { error: r.error.message } : { ok: true });
      } else {
        answer({ error: 'unknown command' });
      }
    } catch (e) {
      answer({ error: String(e) });
    }
  }
  ws.close();
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
