// Load for bench/scale.py: stock y-websocket clients spread over several hub processes.
//
//   node scaleload.mjs --urls ws://h1/ws,ws://h2/ws --doc ID --clients N --edits M --mode paced|burst [--rate R]
//   node scaleload.mjs --urls ... --mode joins --clients N --doc PREFIX     (client i on document PREFIX-i)
//
// Client i connects to urls[i % urls.length]. fanout (paced/burst): like loadgen.mjs (every edit
// inserts EDIT_LEN characters, so a sender's clock says how many of its edits a receiver has),
// with latencies split by whether sender and receiver are on the same process. All clients live
// in this one process: send and receive times share one clock.
// joins: every client connects, syncs and types a word; reports joins/s and sync latency.
// Protocol as loadgen.mjs: {"ev":"ready"} → "go" → {"ev":"result"} → "quit".
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import * as readline from 'node:readline'
import { performance } from 'node:perf_hooks'

const args = {}
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
const urls = (args.urls || '').split(',').filter(Boolean)
const N = parseInt(args.clients || '1')
const M = parseInt(args.edits || '0')
const mode = args.mode || 'burst'
const rate = parseFloat(args.rate || '10')
const timeoutMs = parseFloat(args.timeout || '120') * 1000
const EDIT_LEN = 4
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz'

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const fail = (msg) => { emit({ ev: 'error', error: msg }); process.exit(1) }
const lines = []
let lineWaiter = null
readline.createInterface({ input: process.stdin }).on('line', (l) => {
  if (lineWaiter) { const w = lineWaiter; lineWaiter = null; w(l.trim()) } else lines.push(l.trim())
})
const nextLine = () => lines.length ? Promise.resolve(lines.shift()) : new Promise((resolve) => { lineWaiter = resolve })
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

const connect = (i, docId) => {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(urls[i % urls.length], docId, doc, {
    WebSocketPolyfill: WebSocket, disableBc: true
  })
  provider.on('connection-close', (ev) => {
    if (!stopping) fail(`client ${i} lost its connection (code ${ev ? ev.code : 'none'})`)
  })
  return { doc, text: doc.getText('content'), provider, proc: i % urls.length }
}

async function fanout () {
  const clients = Array.from({ length: N }, (_, i) => connect(i, args.doc))
  await waitUntil(() => clients.every((c) => c.provider.synced), 'all clients to sync')
  const ids = clients.map((c) => c.doc.clientID)
  const sendTimes = clients.map(() => new Float64Array(M + 1))
  const seen = clients.map(() => new Int32Array(N))
  const same = []
  const cross = []
  let delivered = 0
  let lastDelivery = 0
  clients.forEach((rc, r) => {
    rc.doc.on('update', (_update, origin) => {
      if (origin !== rc.provider) return
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
  emit({ ev: 'ready' })
  if ((await nextLine()) !== 'go') fail('expected go')
  const counts = new Int32Array(N)
  const edit = (i) => {
    const c = clients[i]
    const k = ++counts[i]
    sendTimes[i][k] = performance.now()
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
  const texts = new Set(clients.map((c) => c.text.toString()))
  emit({
    ev: 'result', deliveries: delivered, seconds: (lastDelivery - t0) / 1000,
    sameP50: percentile(same, 50), sameP99: percentile(same, 99),
    crossP50: percentile(cross, 50), crossP99: percentile(cross, 99),
    converged: texts.size === 1
  })
  if ((await nextLine()) !== 'quit') fail('expected quit')
  stopping = true
  clients.forEach((c) => c.provider.destroy())
  setTimeout(() => process.exit(0), 100)
}

async function joins () {
  emit({ ev: 'ready' })
  if ((await nextLine()) !== 'go') fail('expected go')
  const t0 = performance.now()
  const synced = new Float64Array(N)
  const clients = Array.from({ length: N }, (_, i) => {
    const c = connect(i, `${args.doc}-${i}`)
    c.provider.on('sync', (ok) => {
      if (ok && !synced[i]) { synced[i] = performance.now() - t0; c.text.insert(0, 'word ') }
    })
    return c
  })
  await waitUntil(() => synced.every((t) => t > 0), 'every client to sync')
  const seconds = Math.max(...synced) / 1000
  const lat = Array.from(synced).sort((a, b) => a - b)
  emit({ ev: 'result', joins: N, seconds, joinsPerS: N / seconds, syncP50: percentile(lat, 50), syncP99: percentile(lat, 99) })
  if ((await nextLine()) !== 'quit') fail('expected quit')
  stopping = true
  clients.forEach((c) => c.provider.destroy())
  setTimeout(() => process.exit(0), 100)
}

if (!urls.length) fail('--urls is required')
;(mode === 'joins' ? joins() : fanout()).catch((e) => fail(String(e && e.stack ? e.stack : e)))
