// Load for bench/scale.py: stock y-websocket clients spread over several hub processes.
//
//   node scaleload.mjs --urls ws://h1/ws,ws://h2/ws --doc ID --clients N --edits M --mode paced|burst [--rate R]
//   node scaleload.mjs --urls ... --mode joins --clients N --doc PREFIX     (client i on document PREFIX-i)
//
// Client i connects to urls[i % urls.length]. fanout (paced/burst): loadcommon.mjs's load, with
// latencies split by whether sender and receiver are on the same process. All clients live in
// this one process: send and receive times share one clock.
// joins: every client connects, syncs and types a word; reports joins/s and sync latency.
// Protocol: loadcommon.mjs ({"ev":"ready"} → "go" → {"ev":"result"} → "quit").
import { performance } from 'node:perf_hooks'
import { args, connect, emit, expectLine, fail, fanout, finish, percentile, waitUntil } from './loadcommon.mjs'

const urls = (args.urls || '').split(',').filter(Boolean)
const N = parseInt(args.clients || '1')
const mode = args.mode || 'burst'
const client = (i, docId) => connect(i, urls[i % urls.length], docId, { proc: i % urls.length })

async function runFanout () {
  const clients = Array.from({ length: N }, (_, i) => client(i, args.doc))
  const r = await fanout(clients, { edits: parseInt(args.edits || '0'), mode, rate: parseFloat(args.rate || '10') })
  emit({
    ev: 'result', deliveries: r.delivered, seconds: r.seconds,
    sameP50: percentile(r.same, 50), sameP99: percentile(r.same, 99),
    crossP50: percentile(r.cross, 50), crossP99: percentile(r.cross, 99),
    converged: r.converged
  })
  await finish(clients)
}

async function joins () {
  emit({ ev: 'ready' })
  await expectLine('go')
  const t0 = performance.now()
  const synced = new Float64Array(N)
  const clients = Array.from({ length: N }, (_, i) => {
    const c = client(i, `${args.doc}-${i}`)
    c.provider.on('sync', (ok) => {
      if (ok && !synced[i]) { synced[i] = performance.now() - t0; c.text.insert(0, 'word ') }
    })
    return c
  })
  await waitUntil(() => synced.every((t) => t > 0), 'every client to sync')
  const seconds = Math.max(...synced) / 1000
  const lat = Array.from(synced).sort((a, b) => a - b)
  // lat: every client's sync time (ms after "go"), so that several generators' runs pool exactly
  emit({ ev: 'result', joins: N, seconds, joinsPerS: N / seconds, syncP50: percentile(lat, 50), syncP99: percentile(lat, 99), lat })
  await finish(clients)
}

if (!urls.length) fail('--urls is required')
;(mode === 'joins' ? joins() : runFanout()).catch((e) => fail(String(e && e.stack ? e.stack : e)))
