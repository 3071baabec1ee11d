// What the load generators share (loadgen.mjs for bench/hub.py, scaleload.mjs for bench/scale.py):
// argument parsing, the JSON-lines protocol with the parent, stock y-websocket clients, and the
// fan-out load itself.
//
// Protocol with the parent (JSON lines): we print {"ev":"ready"} once every client has synced,
// wait for a "go" line on stdin (the parent reads the servers' CPU time in between), run, print
// {"ev":"result", ...}, then wait for "quit" (so closing the sockets is not counted either).
//
// Measuring delivery without decoding updates: every edit inserts exactly EDIT_LEN characters,
// so a sender's Yjs clock after its k-th edit is k*EDIT_LEN. A receiver that sees that sender's
// clock reach k*EDIT_LEN has received edits 1..k (a server that merges queued updates into one
// message is counted correctly too). Latency = receive time - the sender's send time for that
// edit; both are performance.now() in this one process, so there is no clock skew.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import * as readline from 'node:readline'
import { performance } from 'node:perf_hooks'

export const args = {}
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
export const timeoutMs = parseFloat(args.timeout || '120') * 1000
export const EDIT_LEN = 4
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz'

export const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
export const fail = (msg) => { emit({ ev: 'error', error: msg }); process.exit(1) }

// stdin lines arrive as awaited promises, in order
const lines = []
let lineWaiter = null
readline.createInterface({ input: process.stdin }).on('line', (l) => {
  if (lineWaiter) { const w = lineWaiter; lineWaiter = null; w(l.trim()) } else lines.push(l.trim())
})
export const nextLine = () => lines.length ? Promise.resolve(lines.shift()) : new Promise((resolve) => { lineWaiter = resolve })
export const expectLine = async (want) => { if ((await nextLine()) !== want) fail(`expected ${want}`) }

export const waitUntil = (cond, what) => new Promise((resolve) => {
  const t0 = performance.now()
  const tick = () => {
    if (cond()) return resolve()
    if (performance.now() - t0 > timeoutMs) fail(`timed out waiting for ${what}`)
    setTimeout(tick, 5)
  }
  tick()
})

export const percentile = (sorted, p) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p / 100 * sorted.length))] : null

let stopping = false

// A stock y-websocket client; `proc`: which server it is on (for same/cross-process latencies).
export const connect = (i, url, docId, { token, proc = 0 } = {}) => {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, docId, doc, {
    params: token ? { token } : {},
    WebSocketPolyfill: WebSocket,
    disableBc: true // all clients live in this process: they must sync through the server only
  })
  provider.on('connection-close', (ev) => {
    if (!stopping) fail(`client ${i} lost its connection (code ${ev ? ev.code : 'none'})`)
  })
  return { doc, text: doc.getText('content'), provider, proc }
}

// After the result: wait for "quit", then close every client and exit.
export async function finish (clients) {
  await expectLine('quit')
  stopping = true
  clients.forEach((c) => c.provider.destroy())
  setTimeout(() => process.exit(0), 100)
}

// The fan-out load: every client makes `edits` edits (`burst`: all at once, as fast as the clients
// produce them; `paced`: `rate` edits/s each, phases spread so the server sees a steady stream),
// and every other client must receive each. Latencies are split by whether sender and receiver
// are on the same server (`proc`). Resolves with what the result line reports.
export async function fanout (clients, { edits: M, mode, rate }) {
  const N = clients.length
  await waitUntil(() => clients.every((c) => c.provider.synced), 'all clients to sync')
  const ids = clients.map((c) => c.doc.clientID)
  const startLength = clients[0].text.length
  const sendTimes = clients.map(() => new Float64Array(M + 1)) // [sender][k] for edit k (1-based)
  const seen = clients.map(() => new Int32Array(N)) // [receiver][sender]: edits received so far
  const same = []
  const cross = []
  let delivered = 0
  let lastDelivery = 0
  clients.forEach((rc, r) => {
    rc.doc.on('update', (_update, origin) => {
      if (origin !== rc.provider) return // our own edit
      const now = performance.now()
      for (let s = 0; s < N; s++) {
        if (s === r) continue
        const k = Math.floor(Y.getState(rc.doc.store, ids[s]) / EDIT_LEN)
        const into = clients[s].proc === rc.proc ? same : cross
        for (let j = seen[r][s] + 1; j <= k; j++) into.push(now - sendTimes[s][j])
        if (k > seen[r][s]) { delivered += k - seen[r][s]; seen[r][s] = k; lastDelivery = now }
      }
    })
  })
  emit({ ev: 'ready', clients: N, startLength })
  await expectLine('go')
  const counts = new Int32Array(N)
  const edit = (i) => {
    const c = clients[i]
    const k = ++counts[i]
    sendTimes[i][k] = performance.now()
    // one transaction = one update = one websocket message from the stock provider
    c.text.insert(Math.floor(Math.random() * (c.text.length + 1)), ALPHABET[i % 26].repeat(EDIT_LEN))
  }
  const t0 = performance.now()
  if (mode === 'burst') {
    for (let k = 0; k < M; k++) for (let i = 0; i < N; i++) edit(i)
  } else {
    const period = 1000 / rate
    await Promise.all(clients.map((_, i) => new Promise((resolve) => {
      let k = 0
      const start = t0 + (i / N) * period
      const step = () => {
        if (k >= M) return resolve()
        edit(i); k++
        setTimeout(step, Math.max(0, start + k * period - performance.now()))
      }
      setTimeout(step, Math.max(0, start - performance.now()))
    })))
  }
  const expected = N * M * (N - 1)
  await waitUntil(() => delivered >= expected, `${expected} deliveries (have ${delivered})`)
  same.sort((a, b) => a - b)
  cross.sort((a, b) => a - b)
  const all = same.concat(cross).sort((a, b) => a - b)
  const texts = new Set(clients.map((c) => c.text.toString()))
  return {
    delivered,
    seconds: (lastDelivery - t0) / 1000,
    all,
    same,
    cross,
    converged: texts.size === 1,
    length: clients[0].text.length - startLength
  }
}
