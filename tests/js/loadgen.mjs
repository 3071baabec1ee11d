// Load generator for bench/hub.py: N real Yjs clients (stock y-websocket WebsocketProvider) in one
// process, each making M edits to the `content` Y.Text of one document. The same script drives
// the tinymorph hub and the Node reference server, so the two see the same load.
//
//   node loadgen.mjs --url ws://127.0.0.1:PORT/ws --doc ID --clients N --edits M
//                    --mode paced|burst [--rate EDITS_PER_S_PER_CLIENT] [--tokens T1,T2,..] [--timeout S]
//   node loadgen.mjs --url ... --doc ID --mode observe --expect-clock C [--print-text 1] [--timeout S]
//
// The protocol with the parent and how deliveries are counted: loadcommon.mjs.
import * as Y from 'yjs'
import { args, connect, emit, fail, fanout, finish, percentile, waitUntil } from './loadcommon.mjs'

const url = args.url
const docId = args.doc
const mode = args.mode || 'burst'
const tokens = args.tokens ? args.tokens.split(',') : []

async function runLoad () {
  const N = parseInt(args.clients || '1')
  const M = parseInt(args.edits || '0')
  const clients = Array.from({ length: N }, (_, i) => connect(i, url, docId, { token: tokens[i % tokens.length] }))
  const r = await fanout(clients, { edits: M, mode, rate: parseFloat(args.rate || '10') })
  emit({
    ev: 'result',
    mode,
    clients: N,
    edits: M,
    sent: N * M,
    deliveries: r.delivered,
    seconds: r.seconds,
    deliveriesPerS: r.delivered / r.seconds,
    p50ms: percentile(r.all, 50),
    p99ms: percentile(r.all, 99),
    converged: r.converged,
    length: r.length
  })
  await finish(clients)
}

async function runObserve () {
  // One client that waits until it has received a replayed trace: its total Yjs clock (the sum
  // of its state vector) reaching --expect-clock. Not the text's length: with deletions the
  // length can pass through its final value long before the last edit.
  const expectClock = parseInt(args['expect-clock'])
  const c = connect(0, url, docId, { token: tokens[0] })
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
  await finish([c])
}

if (!url || !docId) fail('--url and --doc are required')
;(mode === 'observe' ? runObserve() : runLoad()).catch((e) => fail(String(e && e.stack ? e.stack : e)))
