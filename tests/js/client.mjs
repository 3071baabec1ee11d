// A real Yjs client (npm yjs + y-websocket's stock WebsocketProvider) driven by JSON lines.
//
//   node client.mjs --url ws://127.0.0.1:PORT/ws --doc DOC_ID [--token T] [--name N] [--trace]
//
// stdin  (one JSON object per line): commands
//   {"cmd":"insert","index":0,"text":"hi"}   index -1 appends at the end
//   {"cmd":"delete","index":0,"length":2}
//   {"cmd":"presence","state":{"name":"ann"}}   state null clears it
//   {"cmd":"snapshot"}                          replies with an "snapshot" event
//   {"cmd":"quit"}                              polite leave: provider.destroy(), then exit
// stdout (one JSON object per line): events, pushed as they happen so the Python side can wait
//   on conditions instead of sleeping: hello, status, synced, text, awareness, permission-denied,
//   connection-close, closed, snapshot, frame (only with --trace), error.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import * as decoding from 'lib0/decoding'
import * as readline from 'node:readline'

const args = {}
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i]
  if (!a.startsWith('--')) continue
  const key = a.slice(2)
  const next = process.argv[i + 1]
  if (next === undefined || next.startsWith('--')) args[key] = true
  else { args[key] = next; i++ }
}
if (!args.url || !args.doc) {
  process.stderr.write('usage: client.mjs --url ws://host:port/ws --doc ID [--token T] [--name N]\n')
  process.exit(2)
}

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const doc = new Y.Doc()
const text = doc.getText('content')
const params = args.token ? { token: String(args.token) } : {}
const provider = new WebsocketProvider(String(args.url), String(args.doc), doc, {
  params,
  WebSocketPolyfill: WebSocket, // node 20 has no global WebSocket
  disableBc: true, // never sync through an in-process BroadcastChannel: only via the server
  maxBackoffTime: 500
})

// The stock handler for the auth message only console.warn()s; wrap it to report the reason
// (still calling the original, so the provider behaves exactly as stock).
const messageAuth = 2
const stockAuth = provider.messageHandlers[messageAuth]
provider.messageHandlers[messageAuth] = (encoder, decoder, prov, emitSynced, type) => {
  // The auth message is [2, varUint authType (0 = permission denied), varString reason];
  // read it from a copy so the stock handler still sees the untouched decoder.
  const copy = decoding.createDecoder(decoder.arr.subarray(decoder.pos))
  const authType = decoding.readVarUint(copy)
  const reason = decoding.readVarString(copy)
  emit({ ev: 'permission-denied', authType, reason })
  stockAuth(encoder, decoder, prov, emitSynced, type)
}

if (args.trace) {
  // Log the type of every incoming frame (and its first bytes) to help pin protocol bugs.
  for (const [i, h] of provider.messageHandlers.entries()) {
    if (typeof h !== 'function') continue
    provider.messageHandlers[i] = (encoder, decoder, prov, emitSynced, type) => {
      const bytes = decoder.arr.slice(0, 48)
      emit({ ev: 'frame', type, len: decoder.arr.length, head: Buffer.from(bytes).toString('hex') })
      return h(encoder, decoder, prov, emitSynced, type)
    }
  }
}

const states = () => {
  const out = {}
  for (const [id, st] of provider.awareness.getStates()) out[id] = st
  return out
}

emit({ ev: 'hello', clientID: doc.clientID, name: args.name || null })
provider.on('status', ({ status }) => emit({ ev: 'status', status }))
provider.on('sync', (isSynced) => { if (isSynced) emit({ ev: 'synced', text: text.toString() }) })
provider.on('connection-close', (event) => emit({
  ev: 'connection-close', code: event ? event.code : null, reason: event ? String(event.reason) : null
}))
provider.on('closed', ({ code, reason }) => emit({ ev: 'closed', code, reason: String(reason) }))
provider.on('connection-error', () => emit({ ev: 'connection-error' }))
text.observe(() => emit({ ev: 'text', text: text.toString() }))
// origin says who changed it: 'remote' (a message from the server) or e.g. 'timeout' (the
// awareness protocol's own 30 s expiry), so tests can tell a server-signalled departure apart.
provider.awareness.on('change', ({ added, updated, removed }, origin) => emit({
  ev: 'awareness',
  states: states(),
  removed,
  origin: origin === provider ? 'remote' : (typeof origin === 'string' ? origin : 'local')
}))
if (args.name) provider.awareness.setLocalStateField('user', { name: String(args.name) })

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (!line.trim()) return
  let m
  try { m = JSON.parse(line) } catch (e) { emit({ ev: 'error', error: 'bad json: ' + line }); return }
  try {
    switch (m.cmd) {
      case 'insert': text.insert(m.index < 0 ? text.length : m.index, m.text); break
      case 'delete': text.delete(m.index, m.length); break
      case 'presence': provider.awareness.setLocalState(m.state); break
      case 'snapshot':
        emit({ ev: 'snapshot', text: text.toString(), states: states(), synced: provider.synced, clientID: doc.clientID })
        break
      case 'quit':
        provider.destroy() // sends our awareness removal and closes the socket
        setTimeout(() => process.exit(0), 200)
        break
      default: emit({ ev: 'error', error: 'unknown cmd ' + m.cmd })
    }
  } catch (e) {
    emit({ ev: 'error', error: String(e && e.stack ? e.stack : e) })
  }
})
// stdin closed (the test process went away): leave, too
rl.on('close', () => { provider.destroy(); setTimeout(() => process.exit(0), 100) })
