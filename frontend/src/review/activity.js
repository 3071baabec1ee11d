// Activity: per-session, per-author stats (written, kept, deleted, suggestions) and the edit list.
import { docPath } from '../api.js'
import { h, setChildren, nextId, formatTime, kindIcon, kindLabel } from '../ui.js'
import { count, showError, loading, steeringText } from './common.js'

const COLUMNS = [['written', 'Written'], ['kept', 'Kept'], ['deleted', 'Deleted'], ['suggestions_accepted', 'Suggestions accepted'], ['suggestions_rejected', 'Suggestions rejected']]

export function activityView ({ api, docId }) {
  const el = h('div', { class: 'review activity' })
  const kindId = nextId('kind')
  const kindSel = h('select', { id: kindId, onchange: () => refresh() },
    h('option', { value: '' }, 'everyone'), h('option', { value: 'human' }, '👤 people'), h('option', { value: 'agent' }, '🤖 agents'))

  function sessionTable (s, i) {
    return h('table', { class: 'stats' },
      h('caption', {}, `Session ${i + 1}: ${formatTime(s.start)} – ${formatTime(s.end)}`),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Author'), COLUMNS.map(([, label]) => h('th', { scope: 'col' }, label)))),
      h('tbody', {}, (s.authors || []).map((a) => h('tr', {},
        h('th', { scope: 'row' }, h('span', { 'aria-hidden': 'true' }, kindIcon(a.kind), ' '), a.author_name, h('span', { class: 'muted' }, ` (${kindLabel(a.kind)})`)),
        COLUMNS.map(([key]) => h('td', {}, String(a[key] ?? 0)))))))
  }

  async function refresh () {
    if (!el.childElementCount) setChildren(el, loading('activity'))
    let sessions, entries
    try {
      [{ sessions }, { entries }] = await Promise.all([
        api.get(docPath(docId, '/sessions')),
        api.get(docPath(docId, '/history'), { kind: kindSel.value }),
      ])
    } catch (err) { return showError(el, err, 'Activity') }
    const recent = (entries || []).slice(-200).reverse()
    setChildren(el,
      h('h3', {}, 'Sessions'),
      sessions && sessions.length ? sessions.map(sessionTable) : h('p', { class: 'muted' }, 'No sessions yet.'),
      h('div', { class: 'row' }, h('h3', {}, 'Edits'), h('label', { for: kindId }, 'Show'), kindSel),
      h('ol', { class: 'activity-list', reversed: true, 'aria-label': 'Edits, newest first' }, recent.map((e) => h('li', { class: `activity-${e.kind}` },
        h('time', { datetime: e.at }, formatTime(e.at)), ' ',
        h('span', { 'aria-hidden': 'true' }, kindIcon(e.kind)), ' ', h('strong', {}, e.author_name || 'unknown'),
        ` (${kindLabel(e.kind)}${e.steering ? `, steering ${steeringText(e.steering)}` : ''}) `,
        h('span', { class: 'ins-count' }, `+${count(e.inserted)}`), ' ', h('span', { class: 'del-count' }, `−${count(e.deleted)}`)))))
  }
  return { el, refresh, live: true }
}
