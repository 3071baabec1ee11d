// Load generator for bench/hub.py: N real Yjs clients (stock y-websocket WebsocketProvider) in one
// process, each making M edits to the `content` Y.Text of one document. The same script drives
// the tinymorph hub and the Node reference server, so the two see the same load.
//
//   node loadgen.mjs --url ws://127.0.0.1:PORT/ws --doc ID --clients N --edits M
//                    --mode paced|burst [--rate EDITS_PER_S_PER_CLIENT] [--timeout S]
//   node loadgen.mjs --url ... --doc ID --mode observe --expect-clock C [--print-text 1] [--timeout S]
//
// Protocol with the parent (JSON lines): we print {"ev":"ready"} once every client has synced,
// wait for a "go" line on stdin (the parent reads the server's CPU time in between), run, print
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

const args = {}
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
const url = args.url
const docId = args.doc
const N = parseInt(args.clients || '1')
const M = parseInt(args.edits || '0')
const mode = args.mode || 'burst'
const rate = parseFloat(args.rate || '10')
const timeoutMs = parseFloat(args.timeout || '120') * 1000
const tokens = args.tokens ? args.tokens.split(',') : []
const EDIT_LEN = 4
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz'

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const fail = (msg) => { emit({ ev: 'error', error: msg }); process.exit(1) }

// stdin lines arrive as awaited promises, in order
const lines = []
let lineWaiter = null
readline.createInterface({ input: process.stdin }).on('line', (l) => {
  if (lineWaiter) { const w = lineWaiter; lineWaiter = null; w(l.trim()) } else lines.push(l.trim())
})
const nextLine = () => lines.length ? Promise.resolve(lines.shift()) : new Promise((resolve) => { lineWaiter = resolve })

const connect = (i) => {
  const doc = new Y.Doc()
  const params = tokens.length ? { token: tokens[i % tokens.length] } : {}
  const provider = new WebsocketProvider(url, docId, doc, {
    params,
    WebSocketPolyfill: WebSocket,
    disableBc: true // all clients live in this process: they must sync through the server only
  })
  provider.on('connection-close', (ev) => {
    if (!stopping) fail(`client ${i} lost its connection (code ${ev ? ev.code : 'none'})`)
  })
  return { doc, text: doc.getText('content'), provider }
}

const waitUntil = (cond, what) => new Promise((resolve) => {
  const t0 = performance.now()
  const tick = () => {
    if (cond()) return resolve()
    if (performance.now() - t0 > timeoutMs) fail(`timed out waiting for ${what}`)
    setTimeout(tick, 5)
  }
  tick()
})

const percentile = (sorted, p) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p / 100 * sorted.length))] : null

let stopping = false

async function runLoad () {
  const clients = Array.from({ length: N }, (_, i) => connect(i))
  await waitUntil(() => clients.every((c) => c.provider.synced), 'all clients to sync')
  const ids = clients.map((c) => c.doc.clientID)
  const startLen = clients[0].text.length
  const sendTimes = clients.map(() => new Float64Array(M + 1)) // [sender][k] for edit k (1-based)
  const seen = clients.map(() => new Int32Array(N)) // [receiver][sender]: edits received so far
  const latencies = []
  let delivered = 0
  let lastDelivery = 0

  clients.forEach((rc, r) => {
    rc.doc.on('update', (_update, origin) => {
      if (origin !== rc.provider) return // our own edit
      const now = performance.now()
      for (let s = 0; s < N; s++) {
        if (s === r) continue
        const k = Math.floor(Y.getState(rc.doc.store, ids[s]) / EDIT_LEN)
        for (let j = seen[r][s] + 1; j <= k; j++) latencies.push(now - sendTimes[s][j])
        if (k > seen[r][s]) { delivered += k - seen[r][s]; seen[r][s] = k; lastDelivery = now }
      }
    })
  })

  emit({ ev: 'ready', clients: N, startLength: startLen })
  if ((await nextLine()) !== 'go') fail('expected go')

  const counts = new Int32Array(N)
  const edit = (i) => {
    const c = clients[i]
    const k = ++counts[i]
    const s = ALPHABET[i % 26].repeat(EDIT_LEN)
    sendTimes[i][k] = performance.now()
    // one transaction = one update = one websocket message from the stock provider
    c.text.insert(Math.floor(Math.random() * (c.text.length + 1)), s)
  }
  const t0 = performance.now()
  if (mode === 'burst') {
    // everyone at once, as fast as the client can produce edits
    for (let k = 0; k < M; k++) for (let i = 0; i < N; i++) edit(i)
  } else {
    // paced: each client `rate` edits/s, phases spread so the server sees a steady stream
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
  const elapsed = (lastDelivery - t0) / 1000
  latencies.sort((a, b) => a - b)
  // every client must hold the same text
  const texts = new Set(clients.map((c) => c.text.toString()))
  emit({
    ev: 'result',
    mode,
    clients: N,
    edits: M,
    sent: N * M,
    deliveries: delivered,
    seconds: elapsed,
    deliveriesPerS: delivered / elapsed,
    p50ms: percentile(latencies, 50),
    p99ms: percentile(latencies, 99),
    converged: texts.size === 1,
    length: clients[0].text.length - startLen
  })
  if ((await nextLine()) !== 'quit') fail('expected quit')
  stopping = true
  clients.forEach((c) => c.provider.destroy())
  setTimeout(() => process.exit(0), 100)
}

async function runObserve () {
  // One client that waits until it has received a replayed trace: its total Yjs clock (the sum
  // of its state vector) reaching --expect-clock. Not the text's length: with deletions the
  // length can pass through its final value long before the last edit.
  const expectClock = parseInt(args['expect-clock'])
  const c = connect(0)
  await waitUntil(() => c.provider.synced, 'sync')
  const totalClock = () => { let t = 0; for (const k of Y.decodeStateVector(Y.encodeStateVector(c.doc)).values()) t += k; return t }
  emit({ ev: 'ready', startClock: totalClock() })
  let done = false
  const check = () => {
    if (!done && totalClock() >= expectClock) {
      done = true
      emit({ ev: 'result', clock: expectClock, length: c.text.length, text: args['print-text'] ? c.text.toString() : undefined })
    }
  }
  c.doc.on('update', check)
  check()
  await waitUntil(() => done, `clock ${expectClock} (have ${totalClock()})`)
  if ((await nextLine()) !== 'quit') fail('expected quit')
  stopping = true
  c.provider.destroy()
  setTimeout(() => process.exit(0), 100)
}

if (!url || !docId) fail('--url and --doc are required')
;(mode === 'observe' ? runObserve() : runLoad()).catch((e) => fail(String(e && e.stack ? e.stack : e)))
