// Stopgap probe until `chatgate-load idle` exists: opens N agent RTM sessions
// to a running chatgate, logs each in, keeps them open, and prints the
// server's resident memory (VmRSS from /proc/<pid>/status) before and after,
// with the time to open and log in all of them. Bounded: N sessions, 60 s.
//
// Usage: NODE_PATH=target/sdk-npm/node_modules node loadtest/probe/idle_probe.js <port> <server pid> <token> <N>
'use strict';
const fs = require('node:fs');
const WS = require('ws');

const [port, pid, token, nArg] = process.argv.slice(2);
const N = Number(nArg || 1000);
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);

function session() {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const ws = new WS(`ws://127.0.0.1:${port}/v3.5/agent/rtm/ws`);
    ws.on('open', () => ws.send(JSON.stringify({ action: 'login', request_id: '1', payload: { token: `Bearer ${token}` } })));
    ws.on('message', (d) => {
      const f = JSON.parse(d.toString());
      if (f.type === 'response' && f.request_id === '1') {
        if (!f.success) return reject(new Error(JSON.stringify(f)));
        resolve({ ws, ms: Number(process.hrtime.bigint() - started) / 1e6 });
      }
    });
    ws.on('error', reject);
  });
}

(async () => {
  const deadline = setTimeout(() => { console.error('probe: 60 s limit reached'); process.exit(2); }, 60000);
  const before = rss();
  const t0 = Date.now();
  const sessions = [];
  for (let i = 0; i < N; i += 100) {
    sessions.push(...await Promise.all(Array.from({ length: Math.min(100, N - i) }, session)));
  }
  const seconds = (Date.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 500));
  const after = rss();
  const lat = sessions.map((s) => s.ms).sort((a, b) => a - b);
  const p = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))].toFixed(1);
  console.log(JSON.stringify({
    sessions: N,
    rss_before_kib: before,
    rss_after_kib: after,
    kib_per_session: ((after - before) / N).toFixed(2),
    connect_login_per_sec: (N / seconds).toFixed(0),
    login_ms_p50: p(0.5),
    login_ms_p99: p(0.99),
  }));
  for (const s of sessions) s.ws.close();
  clearTimeout(deadline);
  setTimeout(() => process.exit(0), 200);
})().catch((e) => { console.error(e); process.exit(1); });
