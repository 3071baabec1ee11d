// Blame: the current text coloured by who wrote each part — person vs agent, and which steering.
// Colour is backed by a pattern (agents dashed), a legend, hover titles and hidden text.
import { docPath } from '../api.js'
import { h, setChildren } from '../ui.js'
import { showError, loading, authorKey, authorColour, authorText, legendItem } from './common.js'

export function blameView ({ api, docId }) {
  const el = h('div', { class: 'review blame' })

  async function refresh () {
    if (!el.childElementCount) setChildren(el, loading('authorship'))
    let spans
    try {
      spans = (await api.get(docPath(docId, '/blame'))).spans || []
    } catch (err) { return showError(el, err, 'Blame') }
    const authors = new Map()
    for (const s of spans) {
      const key = authorKey(s)
      const a = authors.get(key) || { ...s, chars: 0 }
      a.chars += s.text.length
      authors.set(key, a)
    }
    const total = spans.reduce((n, s) => n + s.text.length, 0) || 1
    const legend = h('ul', { class: 'legend', 'aria-label': 'Authors' }, [...authors.values()]
      .sort((a, b) => b.chars - a.chars)
      .map((a) => legendItem(a, h('span', { class: 'muted' }, ` — ${Math.round((100 * a.chars) / total)}%`))))
    let lastKey = null
    const text = h('div', { class: 'blame-text', tabIndex: 0, 'aria-label': 'Text coloured by author' }, spans.map((s) => {
      const key = authorKey(s)
      const c = authorColour(s)
      const first = key !== lastKey
      lastKey = key
      return h('span', {
        class: `blame-span blame-${s.kind}`, title: authorText(s), dataset: { author: s.author_name || '', kind: s.kind },
        style: { backgroundColor: c.colorLight, borderBottomColor: c.color },
      }, first ? h('span', { class: 'visually-hidden' }, `[${authorText(s)}:] `) : null, s.text)
    }))
    setChildren(el, legend, text)
  }
  return { el, refresh, live: true }
}
