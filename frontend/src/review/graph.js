// The text-embedding graph: paragraphs as nodes, similarity as edges (solid, thicker = more
// similar), reading order as dashed "next" edges. Click or press Enter on a node to jump to its
// paragraph in the editor. Refreshed while visible as the document changes.
import { docPath } from '../api.js'
import { h, setChildren } from '../ui.js'
import { showError, loading } from './common.js'

const SVG = 'http://www.w3.org/2000/svg'
const W = 720
const H = 460

function s (tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v)
    else el.setAttribute(k, v)
  }
  el.append(...children)
  return el
}

/** A small deterministic force layout (springs on edges, repulsion between nodes). */
export function layout (nodes, edges, previous = new Map()) {
  const pos = nodes.map((n, i) => {
    const old = previous.get(n.id)
    const a = (2 * Math.PI * i) / Math.max(1, nodes.length)
    return old ? { ...old } : { x: W / 2 + 170 * Math.cos(a), y: H / 2 + 150 * Math.sin(a) }
  })
  const index = new Map(nodes.map((n, i) => [n.id, i]))
  const links = edges.map((e) => [index.get(e.source), index.get(e.target), e]).filter(([a, b]) => a != null && b != null)
  for (let iter = 0; iter < 250; iter++) {
    const f = pos.map(() => ({ x: 0, y: 0 }))
    for (let i = 0; i < pos.length; i++) {
      for (let j = i + 1; j < pos.length; j++) {
        const dx = pos[i].x - pos[j].x; const dy = pos[i].y - pos[j].y
        const d2 = Math.max(dx * dx + dy * dy, 25)
        const k = 2500 / d2
        f[i].x += dx * k; f[i].y += dy * k; f[j].x -= dx * k; f[j].y -= dy * k
      }
    }
    for (const [a, b, e] of links) {
      const dx = pos[b].x - pos[a].x; const dy = pos[b].y - pos[a].y
      const d = Math.sqrt(dx * dx + dy * dy) || 1
      const rest = e.kind === 'next' ? 110 : 70 + 80 * (1 - (e.weight ?? 0.5))
      const k = (e.kind === 'next' ? 0.02 : 0.05 * (e.weight ?? 0.5)) * (d - rest) / d
      f[a].x += dx * k; f[a].y += dy * k; f[b].x -= dx * k; f[b].y -= dy * k
    }
    const cool = 1 - iter / 250
    pos.forEach((p, i) => {
      p.x += Math.max(-20, Math.min(20, f[i].x + (W / 2 - p.x) * 0.01)) * cool
      p.y += Math.max(-20, Math.min(20, f[i].y + (H / 2 - p.y) * 0.01)) * cool
      p.x = Math.max(24, Math.min(W - 24, p.x)); p.y = Math.max(24, Math.min(H - 24, p.y))
    })
  }
  return new Map(nodes.map((n, i) => [n.id, pos[i]]))
}

/** Where a paragraph is in the text: by its text if found, else by its paragraph index. */
export function paragraphOffset (text, node) {
  const snippet = (node.text || '').trim()
  if (snippet) {
    const at = text.indexOf(snippet)
    if (at >= 0) return at
  }
  const re = /\n\s*\n/g
  let offset = 0
  for (let i = 0; i < node.index; i++) {
    const m = re.exec(text)
    if (!m) break
    offset = m.index + m[0].length
  }
  return offset
}

// The graph is built by the server's workers a little after the text changes (and the first time
// after the embedding model loads), so a visible graph view asks again every few seconds.
const POLL_MS = 4000

export function graphView ({ api, docId, session, jumpTo }) {
  const el = h('div', { class: 'review graph' })
  let positions = new Map()
  let timer = null

  function hide () { clearTimeout(timer); timer = null }

  async function refresh () {
    clearTimeout(timer)
    timer = setTimeout(refresh, POLL_MS)
    if (!el.childElementCount) setChildren(el, loading('the graph'))
    let nodes, edges
    try {
      ({ nodes = [], edges = [] } = await api.get(docPath(docId, '/graph')))
    } catch (err) { return showError(el, err, 'The graph') }
    if (!nodes.length) {
      const written = session.ytext.toString().trim().length > 0
      return setChildren(el, h('p', { class: 'muted' }, written
        ? 'The graph is being built from your paragraphs…'
        : 'Write a few paragraphs to see how they relate.'))
    }
    positions = layout(nodes, edges, positions)
    const at = (id) => positions.get(id)
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'graph-svg', role: 'group', 'aria-label': `Paragraph graph: ${nodes.length} paragraphs, ${edges.length} links` },
      s('title', {}, 'Paragraphs as nodes, similarity as edges'),
      ...edges.filter((e) => at(e.source) && at(e.target)).map((e) => s('line', {
        x1: at(e.source).x, y1: at(e.source).y, x2: at(e.target).x, y2: at(e.target).y,
        class: `edge edge-${e.kind}`, 'stroke-width': e.kind === 'next' ? 1.2 : 1 + 5 * (e.weight ?? 0.5),
        'stroke-opacity': e.kind === 'next' ? 0.6 : 0.25 + 0.6 * (e.weight ?? 0.5),
      })),
      ...nodes.map((n) => {
        const p = at(n.id)
        const excerpt = (n.text || '').trim().slice(0, 80)
        const go = () => jumpTo(paragraphOffset(session.ytext.toString(), n))
        return s('g', {
          class: 'node', transform: `translate(${p.x},${p.y})`, tabindex: 0, role: 'button',
          'aria-label': `Paragraph ${n.index + 1}: ${excerpt}. Press Enter to jump to it.`, 'data-index': n.index,
          onclick: go, onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); go() } },
        }, s('title', {}, `¶${n.index + 1} ${excerpt}`), s('circle', { r: 16 }), s('text', { 'text-anchor': 'middle', dy: '0.35em' }, String(n.index + 1)))
      }))
    setChildren(el,
      h('p', { class: 'legend-line' }, '— similar (thicker = closer) · ‒ ‒ next paragraph · select a node to jump to it'),
      svg)
  }
  return { el, refresh, hide, live: true }
}
