// The agent panel: pick a persona and a task, steer it (features and vectors with strength
// sliders, a steered-vs-default preview), run and cancel it with live status. Everything is
// built against the agents API contract; when the hub doesn't serve it (404) the panel says
// "agents unavailable" and its controls stay disabled.
import * as Y from 'yjs'
import { createApi, docPath } from './api.js'
import { h, setChildren, nextId, announce, debounce } from './ui.js'
import { styleMaker } from './vectors.js'
import { tokenView } from './tokenview.js'

export const TASKS = [
  { id: 'continue', label: 'Continue', help: 'Write on from the cursor' },
  { id: 'rewrite', label: 'Rewrite', help: 'Rephrase the selection' },
  { id: 'margin_notes', label: 'Margin notes', help: 'Comment on the selection without changing it' },
  { id: 'expand', label: 'Expand', help: 'Say more about the selection (telescopic text, zoomed in)' },
  { id: 'contract', label: 'Contract', help: 'Say it in fewer words (zoomed out)' },
  { id: 'define', label: 'Define', help: 'Inline definition of the selected term' },
]
const TERMINAL = new Set(['done', 'failed', 'cancelled'])
const STATUS_TEXT = { queued: '⏳ Queued', running: '⚙ Running', streaming: '✍ Writing…', done: '✓ Done', failed: '✕ Failed', cancelled: '⊘ Cancelled' }

/** Normalise a steering entry from the API into {id, label, kind, strength, min, max, recommended}.
 * The recommended range and default strength come from the backend only (`recommended`,
 * `default_strength` on persona terms and feature search results: inference/steering/strengths.py);
 * a term without them gets no band and no warning, never a range made up here. */
export function steeringItem (raw, kind = 'vector') {
  if (typeof raw === 'string') raw = { id: raw }
  const rec = Array.isArray(raw.recommended) ? raw.recommended
    : raw.recommended ? [raw.recommended.min, raw.recommended.max] : null
  const strength = raw.strength ?? raw.default_strength ?? (rec ? (rec[0] + rec[1]) / 2 : 0)
  const bound = Math.max(...(rec || []).map(Math.abs), Math.abs(strength), 0.5) * 2
  return {
    id: String(raw.id ?? raw.name ?? raw.index),
    label: raw.label || raw.description || raw.name || String(raw.id),
    kind: raw.kind || kind,
    strength,
    min: raw.min ?? -bound,
    max: raw.max ?? bound,
    recommended: rec,
  }
}

function agentSteering (agent) {
  const st = agent && agent.steering
  if (!st) return []
  if (Array.isArray(st)) return st.map((x) => steeringItem(x, x.kind || 'vector'))
  if (typeof st === 'object') return Object.entries(st).map(([id, v]) => steeringItem(typeof v === 'number' ? { id, strength: v } : { id, ...v }))
  return []
}

export function agentPanel ({ docId, token, session, canWrite, getSelection }) {
  const api = createApi(token)
  const el = h('div', { class: 'agents' })
  const banner = h('div', { class: 'agents-banner', role: 'status' }, 'Checking for agents…')
  const fields = h('fieldset', { class: 'agents-form', disabled: true }, h('legend', { class: 'visually-hidden' }, 'Agent run'))
  let agents = []
  let chosen = [] // steering items in use
  let run = null // {id, timer}

  // persona
  const personaId = nextId('persona')
  const persona = h('select', { id: personaId, onchange: () => { chosen = agentSteering(current()); renderSteering(); describePersona() } })
  const personaInfo = h('p', { class: 'muted persona-info' })
  const current = () => agents.find((a) => a.id === persona.value)
  const describePersona = () => { const a = current(); personaInfo.textContent = a ? `${a.model ? `${a.model} · ` : ''}${a.prompt || ''}` : '' }

  // task and mode (radio groups are keyboard operable with arrow keys natively)
  const taskName = nextId('task')
  const tasks = h('fieldset', { class: 'radios' }, h('legend', {}, 'Task'), TASKS.map((t, i) => h('label', { class: 'radio', title: t.help },
    h('input', { type: 'radio', name: taskName, value: t.id, checked: i === 0 }), ` ${t.label}`, h('span', { class: 'muted radio-help' }, ` — ${t.help}`))))
  const modeName = nextId('mode')
  const modes = h('fieldset', { class: 'radios radios-inline' }, h('legend', {}, 'How'),
    h('label', { class: 'radio' }, h('input', { type: 'radio', name: modeName, value: 'suggest', checked: true }), ' Suggest (accept or reject)'),
    h('label', { class: 'radio' }, h('input', { type: 'radio', name: modeName, value: 'direct' }), ' Write directly'))
  const checked = (name) => el.querySelector(`input[name="${name}"]:checked`)?.value
  // length: the API's options.max_tokens (1..512); empty leaves the task's own default
  const lengthId = nextId('length')
  const length = h('input', { id: lengthId, type: 'number', min: 1, max: 512, step: 1, placeholder: 'task default', class: 'length-input' })
  const maxTokens = () => { const n = Math.round(Number(length.value)); return length.value !== '' && n >= 1 && n <= 512 ? n : undefined }

  // steering: search, sliders
  const searchId = nextId('steer-search')
  const search = h('input', { id: searchId, type: 'search', placeholder: 'e.g. formal, vivid, concise', autocomplete: 'off', 'aria-controls': `${searchId}-results` })
  const results = h('ul', { id: `${searchId}-results`, class: 'steer-results', 'aria-label': 'Matching features and vectors' })
  const steerList = h('ul', { class: 'steer-list', 'aria-label': 'Steering in use' })
  const searchNote = h('p', { class: 'muted', 'aria-live': 'polite' })

  const doSearch = debounce(async () => {
    const q = search.value.trim().toLowerCase()
    if (!q) { setChildren(results); searchNote.textContent = ''; return }
    const local = agents.flatMap(agentSteering).filter((s) => `${s.id} ${s.label}`.toLowerCase().includes(q))
    let remote = []
    try {
      const data = await api.get('/api/sae/features', { q })
      remote = (data.features || []).map((f) => steeringItem(f, 'feature'))
      searchNote.textContent = ''
    } catch (err) {
      searchNote.textContent = err.unavailable ? 'Feature search isn’t available on this hub yet; showing the agents’ vectors.' : `Feature search failed: ${err.message}`
    }
    const found = [...local, ...remote].filter((s, i, all) => all.findIndex((x) => x.kind === s.kind && x.id === s.id) === i)
    setChildren(results, found.length
      ? found.slice(0, 12).map((s) => h('li', {}, h('button', {
        type: 'button', class: 'btn btn-small btn-ghost', 'aria-label': `Add ${s.kind} ${s.label}`,
        onclick: () => { if (!chosen.some((c) => c.kind === s.kind && c.id === s.id)) chosen.push(s); renderSteering(); announce(`Added ${s.label}`) },
      }, '+ ', s.kind === 'feature' ? '🔬 ' : '🧭 ', s.label)))
      : h('li', { class: 'muted' }, 'Nothing matches.'))
  }, 250)
  search.addEventListener('input', doSearch)

  function renderSteering () {
    setChildren(steerList, chosen.length ? chosen.map((s) => {
      const id = nextId('strength')
      const [lo, hi] = s.recommended || [null, null]
      const out = h('output', { for: id, class: 'strength-value' })
      const hint = h('span', { class: 'strength-hint' })
      const slider = h('input', { id, type: 'range', min: s.min, max: s.max, step: 0.05, value: s.strength, 'aria-describedby': `${id}-rec` })
      const paint = () => {
        s.strength = Number(slider.value)
        out.textContent = s.strength.toFixed(2)
        if (!s.recommended) {
          hint.textContent = ''
          slider.setAttribute('aria-valuetext', s.strength.toFixed(2))
          return
        }
        const ok = s.strength >= Math.min(lo, hi) && s.strength <= Math.max(lo, hi)
        hint.textContent = ok ? '✓ in the recommended range' : '⚠ outside the recommended range'
        hint.className = `strength-hint ${ok ? 'ok' : 'warn'}`
        slider.setAttribute('aria-valuetext', `${s.strength.toFixed(2)}, ${ok ? 'recommended' : 'outside the recommended range'}`)
        // the recommended band, drawn on the track
        const pct = (v) => (100 * (v - s.min)) / (s.max - s.min)
        slider.style.setProperty('--rec-from', `${pct(Math.min(lo, hi))}%`)
        slider.style.setProperty('--rec-to', `${pct(Math.max(lo, hi))}%`)
      }
      slider.addEventListener('input', paint)
      paint()
      return h('li', { class: 'steer-item' },
        h('div', { class: 'row' }, h('label', { for: id }, s.kind === 'feature' ? '🔬 ' : '🧭 ', s.label), out,
          h('button', { type: 'button', class: 'btn btn-small btn-ghost', 'aria-label': `Remove ${s.label}`, onclick: () => { chosen = chosen.filter((c) => c !== s); renderSteering() } }, '✕')),
        slider, h('p', { id: `${id}-rec`, class: 'muted small' },
          s.recommended ? `Recommended ${lo} to ${hi}. ` : 'No recommended range for this term. ', hint))
    }) : h('li', { class: 'muted' }, 'No steering: the persona’s default voice.'))
  }
  const steeringPayload = () => chosen.map((s) => ({ kind: s.kind, id: s.id, strength: s.strength }))
  // a style made from examples joins the steering at the strength the backend recommends
  const maker = styleMaker({
    api, docId, onReady: (v) => {
      const s = steeringItem({ id: v.name, label: v.name, kind: v.kind === 'psr' ? 'psr' : 'vector', default_strength: v.default_strength, recommended: v.recommended })
      if (!chosen.some((c) => c.kind === s.kind && c.id === s.id)) chosen.push(s)
      renderSteering()
    },
  })

  // preview: steered vs default, side by side
  const promptId = nextId('prompt')
  const prompt = h('textarea', { id: promptId, rows: 3, placeholder: 'Text to continue (defaults to the text before your cursor)' })
  const preview = h('div', { class: 'preview', 'aria-live': 'polite' })
  async function runPreview () {
    const text = prompt.value.trim() || contextText()
    setChildren(preview, h('p', { class: 'muted' }, 'Generating both versions…'))
    try {
      const r = await api.post('/v1/steer/compare', { prompt: text, steering: steeringPayload(), agent: persona.value || undefined })
      setChildren(preview, h('div', { class: 'compare' },
        h('figure', {}, h('figcaption', {}, '🧭 Steered'), h('p', {}, r.steered)),
        h('figure', {}, h('figcaption', {}, '○ Default'), h('p', {}, r.default))))
    } catch (err) {
      setChildren(preview, h('p', { class: err.unavailable ? 'muted' : 'error' }, err.unavailable ? 'Preview isn’t available: this hub has no steering endpoint yet.' : `Preview failed: ${err.message}`))
    }
  }

  // run / cancel with live status
  const statusLine = h('p', { class: 'run-status', role: 'status', 'aria-live': 'polite' })
  const tokenBox = h('div', { class: 'token-box' })
  const runBtn = h('button', { type: 'button', class: 'btn', dataset: { action: 'run-agent' }, onclick: () => start() }, '▶ Run agent')
  const cancelBtn = h('button', { type: 'button', class: 'btn btn-ghost', dataset: { action: 'cancel-run' }, disabled: true, onclick: () => cancel() }, '■ Cancel')

  function contextText () {
    const { from, to } = getSelection()
    const text = session.ytext.toString()
    return from !== to ? text.slice(from, to) : text.slice(Math.max(0, from - 1200), from)
  }
  const rel = (i) => Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(session.ytext, i))

  async function start () {
    const { from, to } = getSelection()
    const body = {
      agent: persona.value, task: checked(taskName), mode: checked(modeName),
      anchor: rel(to), range: from !== to ? { from: rel(from), to: rel(to) } : undefined,
      options: { steering: steeringPayload(), max_tokens: maxTokens() },
    }
    try {
      setStatus('queued')
      setChildren(tokenBox)
      const { run_id: id } = await api.post(docPath(docId, '/runs'), body)
      run = { id, timer: null }
      cancelBtn.disabled = false
      runBtn.disabled = true
      poll()
    } catch (err) {
      statusLine.textContent = `✕ Could not start: ${err.message}`
    }
  }
  async function poll () {
    if (!run) return
    try {
      const r = await api.get(docPath(docId, `/runs/${run.id}`))
      setStatus(r.status, r.error)
      if (TERMINAL.has(r.status)) {
        setChildren(tokenBox, tokenView(r.result && r.result.token_view))
        return finish()
      }
    } catch (err) { statusLine.textContent = `⚠ Lost track of the run: ${err.message}` }
    run.timer = setTimeout(poll, 800)
  }
  async function cancel () {
    if (!run) return
    try { await api.del(docPath(docId, `/runs/${run.id}`)) } catch (err) { statusLine.textContent = `✕ Could not cancel: ${err.message}` }
  }
  function finish () {
    if (run) clearTimeout(run.timer)
    run = null
    cancelBtn.disabled = true
    runBtn.disabled = false
  }
  function setStatus (status, error) {
    statusLine.dataset.status = status
    statusLine.textContent = `${STATUS_TEXT[status] || status}${error && error !== status ? `: ${error}` : ''}`
  }

  fields.append(
    h('label', { for: personaId }, 'Persona'), persona, personaInfo,
    tasks, modes,
    h('label', { for: lengthId }, 'Length (tokens, at most 512)'), length,
    h('fieldset', { class: 'steering' }, h('legend', {}, 'Steering'),
      h('label', { for: searchId }, 'Search features and vectors'), search, searchNote, results, steerList, maker.el),
    h('details', { class: 'preview-box' }, h('summary', {}, 'Preview steered vs default'),
      h('label', { for: promptId }, 'Prompt'), prompt,
      h('button', { type: 'button', class: 'btn btn-secondary btn-small', onclick: runPreview }, 'Generate preview'), preview),
    h('div', { class: 'row' }, runBtn, cancelBtn), statusLine, tokenBox)
  el.append(banner, fields)
  renderSteering()

  async function load () {
    if (!canWrite) {
      banner.textContent = '👁 View-only: agents can be run by editors.'
      banner.dataset.state = 'readonly'
    }
    try {
      agents = (await api.get('/api/agents')).agents || []
    } catch (err) {
      banner.dataset.state = 'unavailable'
      banner.textContent = err.unavailable
        ? '🤖 Agents unavailable — this hub doesn’t serve the agents API yet.'
        : `🤖 Agents unavailable: ${err.message}`
      return
    }
    if (!agents.length) { banner.dataset.state = 'empty'; banner.textContent = '🤖 No agents are configured on this hub.'; return }
    setChildren(persona, agents.map((a) => h('option', { value: a.id }, a.name || a.id)))
    chosen = agentSteering(current())
    renderSteering()
    describePersona()
    if (canWrite) {
      banner.dataset.state = 'ready'
      banner.textContent = `🤖 ${agents.length} agent${agents.length === 1 ? '' : 's'} ready.`
      fields.disabled = false
    }
  }
  load()
  return { el, destroy: () => { finish(); maker.destroy() } }
}
