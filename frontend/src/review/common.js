// Shared bits of the review views: loading/unavailable states and author colouring.
import { h, setChildren, kindIcon, kindLabel } from '../ui.js'
import { colourFor } from '../identity.js'

/** Show the outcome of a failed load inside `el` — "not on this hub yet" for a routing 404. */
export function showError (el, err, what) {
  setChildren(el, err.unavailable
    ? h('div', { class: 'unavailable', dataset: { unavailable: what } },
      h('p', {}, h('strong', {}, `${what} isn’t available on this hub. `), err.status === 404
        ? 'It doesn’t serve this part of the review API yet; the view lights up once it does.'
        : err.message))
    : h('p', { class: 'error', role: 'alert' }, `Could not load ${what.toLowerCase()}: ${err.message}`))
}

export const loading = (what) => h('p', { class: 'muted', role: 'status' }, `Loading ${what}…`)

/** A short, human description of an author entry: "🤖 Muse (agent, steering: formal+3)". */
export function authorText ({ author_name: name, kind, steering }) {
  const steer = steeringText(steering)
  return `${name || 'unknown'} (${kindLabel(kind)}${steer ? `, steering: ${steer}` : ''})`
}

export function steeringText (steering) {
  if (!steering) return ''
  if (typeof steering === 'string') return steering
  const items = Array.isArray(steering) ? steering : Object.entries(steering).map(([id, strength]) => ({ id, strength }))
  return items.map((s) => `${steeringName(s)}${s.strength != null ? ` ${s.strength > 0 ? '+' : ''}${s.strength}` : ''}`).join(', ')
}

/** A term's name in either spelling: the panel's {id, label} or the backend's spec {source: "caa:formal"}. */
export function steeringName (s) {
  if (s.label || s.name || s.id) return String(s.label || s.name || s.id)
  if (typeof s.source === 'string') return s.source.includes(':') ? s.source.slice(s.source.indexOf(':') + 1) : s.source
  return 'steering'
}

/** Author key for colouring: same person → same colour; agents differ by steering too. */
export const authorKey = (a) => `${a.kind}|${a.author_name}|${steeringText(a.steering)}`
export const authorColour = (a) => colourFor(`${a.author_name}${a.kind === 'agent' ? ':' + steeringText(a.steering) : ''}`)

/** A legend entry: swatch + icon + name, so colour is never the only signal. */
export const legendItem = (a, extra = null) => h('li', { class: `legend-item legend-${a.kind}` },
  h('span', { class: `swatch swatch-${a.kind}`, style: { backgroundColor: authorColour(a).colorLight, borderColor: authorColour(a).color }, 'aria-hidden': 'true' }),
  h('span', { 'aria-hidden': 'true' }, kindIcon(a.kind), ' '), authorText(a), extra)

/** History entries give inserted/deleted as the text itself or as a count. */
export const count = (v) => typeof v === 'string' ? [...v].length : Number(v) || 0
