// Diff between two versions: insertions underlined with "+", deletions struck through with "−".
import { docPath } from '../api.js'
import { h, setChildren, nextId, formatTime, kindIcon } from '../ui.js'
import { showError, loading } from './common.js'

export function diffView ({ api, docId }) {
  const el = h('div', { class: 'review diff' })
  const fromId = nextId('diff-from')
  const toId = nextId('diff-to')
  const fromSel = h('select', { id: fromId })
  const toSel = h('select', { id: toId })
  const out = h('div', { class: 'diff-out', tabIndex: 0, 'aria-label': 'Differences', 'aria-live': 'polite' })
  const summary = h('p', { class: 'muted diff-summary' })
  let entries = []

  const option = (e, i) => h('option', { value: String(e.seq) }, `#${i + 1} · ${formatTime(e.at)} · ${kindIcon(e.kind)} ${e.author_name || ''}`)

  async function compare () {
    setChildren(out, loading('the differences'))
    try {
      const { ops } = await api.get(docPath(docId, '/diff'), { from: fromSel.value, to: toSel.value })
      let ins = 0; let del = 0
      setChildren(out, ops.map((op) => {
        if (op.op === 'equal') return h('span', { class: 'diff-equal' }, op.text)
        const who = op.author_name ? ` by ${op.author_name}${op.kind === 'agent' ? ' (agent)' : ''}` : ''
        if (op.op === 'insert') {
          ins += op.text.length
          return h('ins', { class: `diff-ins diff-${op.kind || 'human'}`, title: `inserted${who}` }, h('span', { class: 'visually-hidden' }, `[inserted${who}:] `), op.text)
        }
        del += op.text.length
        return h('del', { class: 'diff-del', title: `deleted${who}` }, h('span', { class: 'visually-hidden' }, `[deleted${who}:] `), op.text)
      }))
      summary.textContent = `+${ins} characters inserted, −${del} deleted`
    } catch (err) { showError(out, err, 'Diff') }
  }

  async function refresh () {
    if (!entries.length) setChildren(el, loading('the history'))
    try {
      entries = (await api.get(docPath(docId, '/history'))).entries || []
    } catch (err) { return showError(el, err, 'Diff') }
    if (entries.length < 1) return setChildren(el, h('p', { class: 'muted' }, 'No edits yet.'))
    const [prevFrom, prevTo] = [fromSel.value, toSel.value]
    setChildren(fromSel, entries.map(option))
    setChildren(toSel, entries.map(option))
    fromSel.value = prevFrom && entries.some((e) => String(e.seq) === prevFrom) ? prevFrom : String(entries[0].seq)
    toSel.value = prevTo && entries.some((e) => String(e.seq) === prevTo) ? prevTo : String(entries.at(-1).seq)
    if (!el.contains(out)) {
      setChildren(el, h('div', { class: 'row diff-pickers' },
        h('label', { for: fromId }, 'From'), fromSel, h('label', { for: toId }, 'to'), toSel),
      h('p', { class: 'legend-line' }, h('ins', { class: 'diff-ins' }, 'inserted'), ' · ', h('del', { class: 'diff-del' }, 'deleted')),
      summary, out)
      fromSel.addEventListener('change', compare)
      toSel.addEventListener('change', compare)
    }
    await compare()
  }
  return { el, refresh, live: false }
}
