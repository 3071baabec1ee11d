// Timeline: a slider over the history that replays the document to any moment, with play/pause.
import { docPath } from '../api.js'
import { h, setChildren, nextId, formatTime, kindIcon, kindLabel, debounce } from '../ui.js'
import { count, showError, loading } from './common.js'

export function timelineView ({ api, docId }) {
  const el = h('div', { class: 'review timeline' })
  const versions = new Map() // seq → text
  let entries = []
  let playing = null

  const sliderId = nextId('timeline')
  const slider = h('input', { id: sliderId, type: 'range', min: 0, max: 0, step: 1, value: 0, class: 'timeline-slider', 'aria-describedby': `${sliderId}-caption` })
  const caption = h('p', { id: `${sliderId}-caption`, class: 'timeline-caption', 'aria-live': 'polite' })
  const text = h('pre', { class: 'version-text', tabIndex: 0, 'aria-label': 'The document at the chosen moment' })
  const playBtn = h('button', { type: 'button', class: 'btn btn-small', 'aria-pressed': 'false', onclick: () => togglePlay() }, '▶ Play')
  const step = (d) => { stop(); setIndex(Number(slider.value) + d) }
  const controls = h('div', { class: 'row timeline-controls' },
    h('button', { type: 'button', class: 'btn btn-small btn-ghost', 'aria-label': 'First version', onclick: () => { stop(); setIndex(0) } }, '⏮'),
    h('button', { type: 'button', class: 'btn btn-small btn-ghost', 'aria-label': 'Previous edit', onclick: () => step(-1) }, '◀'),
    playBtn,
    h('button', { type: 'button', class: 'btn btn-small btn-ghost', 'aria-label': 'Next edit', onclick: () => step(1) }, '▶'),
    h('button', { type: 'button', class: 'btn btn-small btn-ghost', 'aria-label': 'Latest version', onclick: () => { stop(); setIndex(entries.length - 1) } }, '⏭'))

  const describe = (e, i) => `Edit ${i + 1} of ${entries.length} · ${formatTime(e.at)} · ${kindIcon(e.kind)} ${e.author_name || 'unknown'} (${kindLabel(e.kind)}) · +${count(e.inserted)} −${count(e.deleted)}`

  const show = debounce(async (i) => {
    const e = entries[i]
    if (!e) return
    try {
      if (!versions.has(e.seq)) versions.set(e.seq, (await api.get(docPath(docId, `/versions/${e.seq}`))).text)
      if (Number(slider.value) !== i) return // the slider moved on while we were fetching
      text.textContent = versions.get(e.seq)
      text.dataset.seq = String(e.seq)
    } catch (err) { showError(text, err, 'Versions') }
  }, 120)

  function setIndex (i) {
    i = Math.max(0, Math.min(entries.length - 1, i))
    slider.value = String(i)
    const e = entries[i]
    if (!e) return
    slider.setAttribute('aria-valuetext', describe(e, i))
    caption.textContent = describe(e, i)
    show(i)
  }

  function stop () {
    clearInterval(playing)
    playing = null
    playBtn.textContent = '▶ Play'
    playBtn.setAttribute('aria-pressed', 'false')
  }
  function togglePlay () {
    if (playing) return stop()
    if (Number(slider.value) >= entries.length - 1) setIndex(0)
    playBtn.textContent = '⏸ Pause'
    playBtn.setAttribute('aria-pressed', 'true')
    playing = setInterval(() => {
      if (Number(slider.value) >= entries.length - 1) return stop()
      setIndex(Number(slider.value) + 1)
    }, 500)
  }
  slider.addEventListener('input', () => { stop(); setIndex(Number(slider.value)) })

  async function refresh () {
    const wasLatest = !entries.length || Number(slider.value) >= entries.length - 1
    if (!entries.length) setChildren(el, loading('the history'))
    try {
      entries = (await api.get(docPath(docId, '/history'))).entries || []
    } catch (err) { stop(); return showError(el, err, 'History') }
    if (!entries.length) return setChildren(el, h('p', { class: 'muted' }, 'No edits yet.'))
    slider.max = String(entries.length - 1)
    if (!el.contains(slider)) {
      setChildren(el, h('label', { for: sliderId, class: 'label' }, 'Moment in the document’s history'), slider, controls, caption, text)
    }
    setIndex(wasLatest ? entries.length - 1 : Number(slider.value))
  }

  return { el, refresh, live: true, hide: stop }
}
