// Drives a real chatgate binary with the vendor's npm customer SDK
// (@livechat/customer-sdk 4.0.2) as the customer and a plain WebSocket as the
// agent: token, connect and login, start_chat (resolved by the SDK on the
// incoming_chat push that carries the request_id), messages both ways,
// deactivate. The SDK builds wss://api.livechatinc.com URLs; a WebSocket
// subclass sends them to the local server instead, and the SDK's
// identityProvider hook hands it chatgate's customer token. Prints
// "N passed, M failed" and exits non-zero on any failure.
//
// Usage: node customer_sdk_check.js <path to chatgate binary>
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const WS = require('ws');

const binary = process.argv[2];
const PROVISION = `
[[organization]]
id = "acme"
name = "Acme"
[[organization.agent]]
id = "alice@acme.test"
role = "owner"
tokens = ["alice-pat-1"]
`;

let port;
globalThis.WebSocket = class extends WS {
  constructor(url, protocols) {
    super(url.replace(/^wss:\/\/api[^/]*\.livechatinc\.com/, `ws://127.0.0.1:${port}`), protocols);
  }
};
// The SDK reports usage to the vendor with a browser image beacon; a no-op
// here (nothing leaves the machine).
globalThis.Image = class {
  set src(_url) {}
};
const CustomerSDK = require('@livechat/customer-sdk');

const results = [];
async function check(name, fn) {
  try {
    await fn();
    results.push([name, null]);
    console.log(`ok   ${name}`);
  } catch (e) {
    results.push([name, e]);
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

function withTimeout(promise, ms, what) {
  return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))]);
}

function startServer(dir) {
  fs.writeFileSync(path.join(dir, 'provision.toml'), PROVISION);
  const child = spawn(binary, ['serve', '--listen', '127.0.0.1:0', '--data-dir', path.join(dir, 'data'),
    '--provision', path.join(dir, 'provision.toml'), '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'ignore'] });
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      for (const line of buf.split('\n')) {
        if (line.includes('chatgate serving')) {
          const addr = JSON.parse(line).fields.http_addr;
          resolve({ child, port: Number(addr.split(':').pop()) });
        }
      }
    });
    child.on('exit', (code) => reject(new Error(`chatgate exited with ${code}`)));
  });
}

// A minimal agent client over RTM.
function agent(token) {
  const ws = new WS(`ws://127.0.0.1:${port}/v3.5/agent/rtm/ws`);
  const frames = [];
  const waiters = [];
  ws.on('message', (data) => {
    const f = JSON.parse(data.toString());
    frames.push(f);
    for (const w of waiters.splice(0)) w();
  });
  let n = 0;
  const next = (pred, what) => withTimeout(new Promise((resolve) => {
    const look = () => {
      const i = frames.findIndex(pred);
      if (i >= 0) return resolve(frames.splice(i, 1)[0]);
      waiters.push(look);
    };
    look();
  }), 5000, what);
  const request = async (action, payload) => {
    const id = `a${++n}`;
    ws.send(JSON.stringify({ action, request_id: id, payload }));
    return next((f) => f.type === 'response' && f.request_id === id, action);
  };
  const opened = new Promise((resolve) => ws.on('open', resolve));
  return { ws, opened, request, push: (action, pred = () => true) => next((f) => f.type === 'push' && f.action === action && pred(f.payload), action),
    login: async () => { await opened; const r = await request('login', { token: `Bearer ${token}` }); if (!r.success) throw new Error(JSON.stringify(r)); } };
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatgate-sdk-'));
  const server = await startServer(dir);
  port = server.port;
  const alice = agent('alice-pat-1');
  await alice.login();
  const tokenResponse = await (await fetch(`http://127.0.0.1:${port}/customer/token`, {
    method: 'POST', body: JSON.stringify({ organization_id: 'acme' }),
  })).json();
  const token = {
    accessToken: tokenResponse.access_token,
    entityId: tokenResponse.entity_id,
    expiresIn: tokenResponse.expires_in * 1000,
    tokenType: tokenResponse.token_type,
    creationDate: Date.now(),
    organizationId: 'acme',
  };
  const sdk = CustomerSDK.init({
    organizationId: 'acme',
    clientId: 'chatgate-check',
    identityProvider: () => ({
      getToken: () => Promise.resolve(token),
      getFreshToken: () => Promise.resolve(token),
      hasToken: () => Promise.resolve(true),
      invalidate: () => Promise.resolve(),
    }),
  });
  const events = [];
  sdk.on('incoming_event', (e) => events.push(e));
  let chatId;

  await check('the SDK connects and logs in', async () => {
    const connected = await withTimeout(new Promise((resolve) => sdk.on('connected', resolve)), 10000, 'connected');
    if (connected.customer.id !== tokenResponse.entity_id) throw new Error(`customer id ${JSON.stringify(connected.customer)}`);
  });
  await check('startChat resolves on the incoming_chat push and the agent gets the chat', async () => {
    const { chat } = await withTimeout(sdk.startChat({ chat: { thread: { events: [{ type: 'message', text: 'Hi from customer-sdk' }] } } }), 5000, 'startChat');
    chatId = chat.id;
    if (!chatId) throw new Error('no chat id');
    const p = await alice.push('incoming_chat', (pl) => pl.chat.id === chatId);
    const text = p.payload.chat.thread.events[0].text;
    if (text !== 'Hi from customer-sdk') throw new Error(`first event ${text}`);
  });
  await check('agent message reaches the SDK', async () => {
    const r = await alice.request('send_event', { chat_id: chatId, event: { type: 'message', text: 'Hello from Alice', visibility: 'all' } });
    if (!r.success) throw new Error(JSON.stringify(r));
    await withTimeout(new Promise((resolve) => {
      const look = () => (events.some((e) => e.event && e.event.text === 'Hello from Alice') ? resolve() : setTimeout(look, 20));
      look();
    }), 5000, 'incoming_event');
  });
  await check('sendEvent resolves with the event and the agent gets it', async () => {
    const event = await withTimeout(sdk.sendEvent({ chatId, event: { type: 'message', text: 'Thanks, customer-sdk here' } }), 5000, 'sendEvent');
    if (!event.id) throw new Error(JSON.stringify(event));
    await alice.push('incoming_event', (pl) => pl.event.text === 'Thanks, customer-sdk here');
  });
  await check('deactivateChat closes the chat for both sides', async () => {
    await withTimeout(sdk.deactivateChat({ id: chatId }), 5000, 'deactivateChat');
    await alice.push('chat_deactivated', (pl) => pl.chat_id === chatId);
    const chat = await withTimeout(sdk.getChat({ chatId }), 5000, 'getChat');
    if (chat.thread.active !== false) throw new Error(JSON.stringify(chat.thread));
  });

  sdk.destroy();
  alice.ws.close();
  server.child.kill('SIGTERM');
  const failed = results.filter(([, e]) => e).length;
  console.log(`${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
