// One open document: the Y.Doc, its `content` text, and the y-websocket connection to the hub.
// The provider reconnects by itself after a network drop (exponential backoff, 2.5 s at most)
// and resyncs both ways; edits made while offline stay in the Y.Doc and go out on reconnect.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import * as authProtocol from 'y-protocols/auth'

const MESSAGE_AUTH = 2 // y-websocket's message type for the auth (permission denied) message

export function openSession ({ docId, token, user }) {
  const ydoc = new Y.Doc()
  const ytext = ydoc.getText('content')
  const serverUrl = location.origin.replace(/^http/, 'ws') + '/ws'
  const provider = new WebsocketProvider(serverUrl, docId, ydoc, { params: token ? { token } : {} })
  const awareness = provider.awareness
  awareness.setLocalStateField('user', user)

  const listeners = new Set()
  // `lost`: we were connected and no longer are (y-websocket reports retries as 'connecting')
  const state = { status: 'connecting', synced: false, lost: false, denied: null, closed: null }
  const emit = () => listeners.forEach((fn) => fn({ ...state }))

  provider.on('status', ({ status }) => {
    state.status = status
    if (status !== 'connected') state.synced = false
    if (status === 'disconnected') state.lost = true
    emit()
  })
  provider.on('sync', (synced) => { state.synced = synced; if (synced) state.lost = false; emit() })
  // 44xx closes (unknown document, token revoked) are final: y-websocket stops reconnecting.
  provider.on('closed', ({ code, reason }) => { state.closed = { code, reason }; emit() })
  // The hub answers a viewer's write with the auth message; surface it instead of a console warning.
  provider.messageHandlers[MESSAGE_AUTH] = (_enc, decoder) => {
    authProtocol.readAuthMessage(decoder, ydoc, (_doc, reason) => { state.denied = reason || 'permission denied'; emit() })
  }

  return {
    docId, ydoc, ytext, provider, awareness,
    get state () { return { ...state } },
    /** fn(state) now and on every connection change; returns an unsubscribe function. */
    onState (fn) { listeners.add(fn); fn({ ...state }); return () => listeners.delete(fn) },
    /** Resolves once the first sync with the hub is done. */
    whenSynced () {
      return provider.synced ? Promise.resolve() : new Promise((resolve) => {
        const on = (s) => { if (s) { provider.off('sync', on); resolve() } }
        provider.on('sync', on)
      })
    },
    setUser (u) { awareness.setLocalStateField('user', u) },
    destroy () { listeners.clear(); provider.destroy(); ydoc.destroy() },
  }
}

/** What the connection indicator says, with an icon so colour isn't the only signal. */
export function describeConnection (s) {
  if (s.closed) {
    const why = { 4404: 'this document does not exist', 4410: 'your access was revoked', 4401: 'your link is not valid', 4403: 'your link does not allow this document' }[s.closed.code]
    return { tone: 'error', icon: '⛔', text: `Disconnected: ${why || s.closed.reason || `closed (${s.closed.code})`}` }
  }
  if (s.status === 'connected' && s.synced) return { tone: 'ok', icon: '●', text: 'Connected' }
  if (s.lost) return { tone: 'warn', icon: '⚠', text: 'Offline — reconnecting; your edits are kept and will sync' }
  if (s.status === 'connected') return { tone: 'busy', icon: '◐', text: 'Syncing…' }
  return { tone: 'busy', icon: '◌', text: 'Connecting…' }
}
