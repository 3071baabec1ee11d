// Agent suggestions: the Y.Map `suggestions` (id → {from, to, text, agent, status, kind?}) where
// from/to are Yjs relative positions as JSON, so they follow concurrent edits. Pending ones show
// inline (the range is marked, the proposal follows it as an inlay) and as cards in the margin
// list, each with accept / reject. Margin notes (kind 'note', or an empty range with no
// replacement intent) are comments: accepting one resolves it without touching the text.
import * as Y from 'yjs'
import { Annotation, RangeSet } from '@codemirror/state'
import { Decoration, EditorView, ViewPlugin, WidgetType } from '@codemirror/view'
import { h, setChildren, announce } from './ui.js'

const changed = Annotation.define()

const plain = (v) => (v instanceof Y.Map ? v.toJSON() : v) || {}
const isNote = (s) => s.kind === 'note' || s.kind === 'margin_note' || s.kind === 'define'

/** Resolve a suggestion's positions against the doc: {from, to} or null if they're gone. */
function resolve (ydoc, ytext, s) {
  const abs = (json) => {
    if (json == null) return null
    if (typeof json === 'number') return json // tolerate plain offsets from simple agents
    try {
      const pos = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(json), ydoc)
      return pos && pos.type === ytext ? pos.index : null
    } catch { return null }
  }
  const from = abs(s.from)
  const to = s.to == null ? from : abs(s.to)
  if (from == null || to == null) return null
  return { from: Math.min(from, to), to: Math.max(from, to) }
}

export function createSuggestions (session, { canWrite }) {
  const { ydoc, ytext } = session
  const ymap = ydoc.getMap('suggestions')
  let writable = canWrite
  const listeners = new Set()

  function pending () {
    const out = []
    ymap.forEach((value, id) => {
      const s = plain(value)
      if ((s.status || 'pending') !== 'pending') return
      const range = resolve(ydoc, ytext, s)
      if (range) out.push({ id, ...s, ...range })
    })
    return out.sort((a, b) => a.from - b.from || a.id.localeCompare(b.id))
  }

  function setStatus (id, status) {
    const value = ymap.get(id)
    if (value instanceof Y.Map) value.set('status', status)
    else ymap.set(id, { ...value, status })
  }

  function accept (id) {
    if (!writable) return
    const s = pending().find((p) => p.id === id)
    if (!s) return
    ydoc.transact(() => {
      if (!isNote(s)) {
        if (s.to > s.from) ytext.delete(s.from, s.to - s.from)
        if (s.text) ytext.insert(s.from, s.text)
      }
      setStatus(id, 'accepted')
    })
    announce(isNote(s) ? 'Note resolved' : 'Suggestion accepted')
  }

  function reject (id) {
    if (!writable) return
    ydoc.transact(() => setStatus(id, 'rejected'))
    announce('Suggestion rejected')
  }

  const notify = () => listeners.forEach((fn) => fn())
  ymap.observeDeep(notify)

  // -- the inline part (a CodeMirror extension) -----------------------------------------------
  class Inlay extends WidgetType {
    constructor (s) { super(); this.s = s }
    eq (o) { return o.s.id === this.s.id && o.s.text === this.s.text && o.writable === this.writable }
    get writable () { return writable }
    toDOM () {
      const s = this.s
      const note = isNote(s)
      return h('span', { class: `tm-inlay${note ? ' tm-inlay-note' : ''}`, dataset: { suggestion: s.id } },
        h('span', { class: 'tm-inlay-badge', 'aria-hidden': 'true' }, note ? '📝' : '🤖'),
        h('span', { class: 'tm-inlay-text' }, note ? (s.note || s.text) : s.text),
        writable && h('button', { type: 'button', class: 'tm-inlay-btn', title: note ? 'Resolve' : 'Accept', 'aria-label': `${note ? 'Resolve' : 'Accept'} suggestion from ${s.agent || 'agent'}`, onmousedown: (e) => e.preventDefault(), onclick: () => accept(s.id) }, '✓'),
        writable && h('button', { type: 'button', class: 'tm-inlay-btn', title: 'Reject', 'aria-label': `Reject suggestion from ${s.agent || 'agent'}`, onmousedown: (e) => e.preventDefault(), onclick: () => reject(s.id) }, '✕'))
    }
    ignoreEvent () { return true }
  }

  const plugin = ViewPlugin.fromClass(class {
    constructor (view) {
      this.decorations = this.build()
      this.unlisten = () => listeners.delete(this.onChange)
      this.onChange = () => queueMicrotask(() => view.dispatch({ annotations: changed.of(true) }))
      listeners.add(this.onChange)
    }
    update (u) { if (u.docChanged || u.transactions.some((t) => t.annotation(changed))) this.decorations = this.build() }
    destroy () { this.unlisten() }
    build () {
      const decos = []
      for (const s of pending()) {
        if (s.to > s.from) decos.push(Decoration.mark({ class: isNote(s) ? 'tm-sugg-noted' : 'tm-sugg-range' }).range(s.from, s.to))
        decos.push(Decoration.widget({ widget: new Inlay(s), side: 1 }).range(s.to))
      }
      return Decoration.set(decos, true)
    }
  }, { decorations: (v) => v.decorations })

  const theme = EditorView.baseTheme({
    '.tm-sugg-range': { textDecoration: 'line-through 2px rgba(180, 35, 90, 0.7)', backgroundColor: 'rgba(180, 35, 90, 0.08)' },
    '.tm-sugg-noted': { borderBottom: '2px dotted #9a3412' },
    '.tm-inlay': {
      display: 'inline', margin: '0 2px', padding: '1px 4px', borderRadius: '6px',
      border: '1px dashed #0f766e', backgroundColor: '#ecfdf5', color: '#134e4a', fontSize: '0.92em',
    },
    '.tm-inlay-note': { borderColor: '#9a3412', backgroundColor: '#fff7ed', color: '#7c2d12' },
    '.tm-inlay-badge': { marginRight: '3px' },
    '.tm-inlay-btn': {
      font: 'inherit', fontSize: '0.85em', marginLeft: '4px', padding: '0 5px', cursor: 'pointer',
      border: '1px solid currentColor', borderRadius: '4px', background: 'white', color: 'inherit',
    },
  })

  // -- the margin list (keyboard operable) ------------------------------------------------------
  function marginList () {
    const list = h('ol', { class: 'suggestion-list', 'aria-label': 'Pending suggestions' })
    const empty = h('p', { class: 'muted' }, 'No pending suggestions. Agents running in “suggest” mode put theirs here.')
    const wrap = h('div', {}, empty, list)
    const render = () => {
      const items = pending()
      empty.hidden = items.length > 0
      setChildren(list, items.map((s) => {
        const note = isNote(s)
        const context = ytext.toString().slice(s.from, s.to)
        return h('li', { class: 'suggestion-card', dataset: { suggestion: s.id } },
          h('p', { class: 'suggestion-meta' }, h('span', { 'aria-hidden': 'true' }, note ? '📝 ' : '🤖 '),
            h('strong', {}, s.agent || 'agent'), note ? ' left a note' : context ? ' suggests replacing' : ' suggests inserting'),
          context && h('blockquote', { class: note ? 'suggestion-context' : 'suggestion-old' }, context),
          h('p', { class: note ? 'suggestion-note' : 'suggestion-new' }, note ? (s.note || s.text) : s.text),
          h('div', { class: 'row' },
            h('button', { type: 'button', class: 'btn btn-small', disabled: !writable, onclick: () => accept(s.id) }, note ? '✓ Resolve' : '✓ Accept'),
            h('button', { type: 'button', class: 'btn btn-small btn-ghost', disabled: !writable, onclick: () => reject(s.id) }, '✕ Reject')))
      }))
    }
    listeners.add(render)
    ytext.observe(render)
    render()
    return { el: wrap, count: () => pending().length }
  }

  return {
    extension: [plugin, theme],
    marginList,
    accept, reject, pending,
    onChange (fn) { listeners.add(fn); return () => listeners.delete(fn) },
    setWritable (w) { writable = w; notify() },
    destroy () { ymap.unobserveDeep(notify); listeners.clear() },
  }
}
