// Presence: other people's and agents' cursors in the editor, and the list of who is here.
// Replaces y-codemirror.next's remote selections so agents can be marked as agents (robot badge
// and the word "agent", not colour alone) and names are always shown next to carets.
import * as Y from 'yjs'
import { Annotation, RangeSet } from '@codemirror/state'
import { Decoration, EditorView, ViewPlugin, WidgetType } from '@codemirror/view'
import { h, setChildren, kindIcon, kindLabel } from './ui.js'

const refresh = Annotation.define()

class CaretWidget extends WidgetType {
  constructor (clientId, user) {
    super()
    this.clientId = clientId
    this.user = user
  }

  eq (other) {
    return other.clientId === this.clientId && other.user.name === this.user.name &&
      other.user.color === this.user.color && other.user.kind === this.user.kind
  }

  toDOM () {
    const { name, color, kind } = this.user
    const agent = kind === 'agent'
    return h('span', {
      class: `tm-caret${agent ? ' tm-caret-agent' : ''}`, style: { borderColor: color },
      dataset: { client: String(this.clientId), name, kind: agent ? 'agent' : 'human' },
      'aria-hidden': 'true', // the presence list is the accessible version of this
    }, '\u2060', h('span', { class: 'tm-caret-label', style: { backgroundColor: color } },
      agent ? `🤖 ${name} · agent` : name), '\u2060')
  }

  ignoreEvent () { return true }
}

function userOf (state) {
  const u = (state && state.user) || {}
  return { name: u.name || 'Anonymous', color: u.color || '#475569', colorLight: u.colorLight || (u.color || '#475569') + '33', kind: u.kind === 'agent' ? 'agent' : 'human' }
}

/** The CodeMirror extension: publishes our cursor, draws everyone else's. */
export function remoteCursors (ytext, awareness) {
  const plugin = ViewPlugin.fromClass(class {
    constructor (view) {
      this.decorations = RangeSet.of([])
      this.onChange = ({ added, updated, removed }) => {
        if ([...added, ...updated, ...removed].some((id) => id !== awareness.clientID)) {
          view.dispatch({ annotations: refresh.of(true) })
        }
      }
      awareness.on('change', this.onChange)
    }

    destroy () { awareness.off('change', this.onChange) }

    update (update) {
      this.publish(update)
      this.decorations = this.draw(update.view)
    }

    publish (update) {
      const local = awareness.getLocalState()
      if (local == null) return
      const focused = update.view.hasFocus && update.view.dom.ownerDocument.hasFocus()
      if (!focused) return // keep showing where we were while another window has focus
      const sel = update.state.selection.main
      const anchor = Y.createRelativePositionFromTypeIndex(ytext, sel.anchor)
      const head = Y.createRelativePositionFromTypeIndex(ytext, sel.head)
      const cur = local.cursor
      if (cur && Y.compareRelativePositions(Y.createRelativePositionFromJSON(cur.anchor), anchor) &&
          Y.compareRelativePositions(Y.createRelativePositionFromJSON(cur.head), head)) return
      awareness.setLocalStateField('cursor', { anchor: Y.relativePositionToJSON(anchor), head: Y.relativePositionToJSON(head) })
    }

    draw (view) {
      const ydoc = ytext.doc
      const length = view.state.doc.length
      const decos = []
      awareness.getStates().forEach((state, clientId) => {
        if (clientId === awareness.clientID || !state.cursor?.anchor || !state.cursor?.head) return
        let anchor, head
        try {
          anchor = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(state.cursor.anchor), ydoc)
          head = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(state.cursor.head), ydoc)
        } catch { return } // a malformed position from some peer must not break the editor
        if (!anchor || !head || anchor.type !== ytext || head.type !== ytext) return
        const user = userOf(state)
        const from = Math.min(anchor.index, head.index, length)
        const to = Math.min(Math.max(anchor.index, head.index), length)
        if (from < to) {
          decos.push(Decoration.mark({
            class: `tm-remote-sel${user.kind === 'agent' ? ' tm-remote-sel-agent' : ''}`,
            attributes: { style: `background-color: ${user.colorLight}` },
          }).range(from, to))
        }
        const at = Math.min(head.index, length)
        decos.push(Decoration.widget({ widget: new CaretWidget(clientId, user), side: head.index > anchor.index ? -1 : 1 }).range(at))
      })
      return Decoration.set(decos, true)
    }
  }, { decorations: (v) => v.decorations })

  return [plugin, EditorView.baseTheme({
    '.tm-caret': { position: 'relative', borderLeft: '2px solid', marginLeft: '-1px', marginRight: '-1px' },
    '.tm-caret-agent': { borderLeftStyle: 'dashed' },
    '.tm-caret-label': {
      position: 'absolute', left: '-2px', bottom: '100%', whiteSpace: 'nowrap', color: 'white',
      font: '600 11px/1.3 system-ui, sans-serif', padding: '1px 5px', borderRadius: '4px 4px 4px 0',
      pointerEvents: 'none', zIndex: 10, opacity: 0.92,
    },
    '.tm-remote-sel-agent': { textDecoration: 'underline dashed 1px' },
  })]
}

/** The "who is here" list in the header, kept in sync with awareness. */
export function presenceList (awareness) {
  const list = h('ul', { class: 'presence', 'aria-label': 'People and agents in this document' })
  const render = () => {
    const people = []
    awareness.getStates().forEach((state, clientId) => {
      if (!state || !state.user) return
      people.push({ clientId, me: clientId === awareness.clientID, ...userOf(state) })
    })
    people.sort((a, b) => (b.me - a.me) || a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name))
    setChildren(list, people.map((p) => h('li', {
      class: `presence-item presence-${p.kind}`, dataset: { name: p.name, kind: p.kind },
      title: `${p.name} (${p.me ? 'you' : kindLabel(p.kind)})`,
    },
    h('span', { class: 'avatar', style: { backgroundColor: p.color }, 'aria-hidden': 'true' },
      p.kind === 'agent' ? '🤖' : initials(p.name)),
    h('span', { class: 'presence-name' }, p.name),
    h('span', { class: 'presence-kind' }, p.me ? '(you)' : p.kind === 'agent' ? `${kindIcon('agent')} agent` : ''))))
    list.dataset.count = String(people.length)
  }
  awareness.on('change', render)
  render()
  return { el: list, destroy: () => awareness.off('change', render) }
}

const initials = (name) => name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => [...w][0].toUpperCase()).join('') || '?'
