// A finished run's per-token view (the run's `result.token_view`, scored by the worker:
// agents/token_view.py): each token of the text it wrote, shaded by how surprising it was to the
// model, or by how much the steering made it likelier (green) or less likely (red) than the
// unsteered model would have. Hover or focus a token for its numbers.
import { h, setChildren, nextId } from './ui.js'

/** Surprise in nats at which the shading is full (a 1-in-3,000 token). */
const FULL_SURPRISE = 8
/** Steering effect in nats at which the shading is full (the token ~20x likelier or rarer). */
const FULL_EFFECT = 3

/** {piece, surprise, effect, title} for one [piece, steered, base] entry. */
export function tokenStats ([piece, steered, base]) {
  const surprise = -steered
  const effect = steered - base
  const p = Math.exp(steered)
  const title = `${JSON.stringify(piece)}: surprise ${surprise.toFixed(2)} nats (p = ${p < 0.001 ? p.toExponential(1) : p.toFixed(3)})` +
    (effect !== 0 ? `; steering ${effect > 0 ? '+' : ''}${effect.toFixed(2)} nats` : '')
  return { piece, surprise, effect, title }
}

/** The shading of one token for a view ('surprise' or 'effect'). */
export function shade (stats, view) {
  if (view === 'effect') {
    const a = Math.min(1, Math.abs(stats.effect) / FULL_EFFECT) * 0.75
    return stats.effect >= 0 ? `rgba(22, 163, 74, ${a.toFixed(3)})` : `rgba(220, 38, 38, ${a.toFixed(3)})`
  }
  const a = Math.min(1, Math.max(0, stats.surprise) / FULL_SURPRISE) * 0.8
  return `rgba(234, 88, 12, ${a.toFixed(3)})`
}

/** The view's element for a run's `token_view`, or null when the run has none. */
export function tokenView (view) {
  if (!view || !Array.isArray(view.tokens) || !view.tokens.length) return null
  const stats = view.tokens.map(tokenStats)
  const name = nextId('tokview')
  const text = h('p', { class: 'token-text', 'aria-label': 'The run\'s text, token by token' })
  const mean = stats.reduce((s, t) => s + t.surprise, 0) / stats.length
  const legend = h('p', { class: 'token-legend' })
  let current = 'surprise'

  function render () {
    setChildren(text, stats.map((t) => h('span', { class: 'tok', tabindex: 0, title: t.title, style: { background: shade(t, current) } }, t.piece)))
    legend.textContent = current === 'effect'
      ? 'Green: the steering made the token likelier; red: less likely (full colour: 3 nats, about 20×).'
      : `Darker: more surprising to the model (full colour: ${FULL_SURPRISE} nats). Mean ${mean.toFixed(2)} nats/token.`
  }
  const choice = (value, label) => h('label', {},
    h('input', { type: 'radio', name, value, checked: value === current, onchange: () => { current = value; render() } }), ` ${label}`)
  render()
  return h('details', { class: 'token-view', open: true, dataset: { steered: String(!!view.steered) } },
    h('summary', {}, 'Token view'),
    h('div', { class: 'row', role: 'radiogroup', 'aria-label': 'Shade tokens by' },
      choice('surprise', 'Surprise'), view.steered ? choice('effect', 'Steering effect') : null),
    legend, text,
    view.truncated ? h('p', { class: 'token-legend' }, 'Only the first tokens are shown.') : null)
}
