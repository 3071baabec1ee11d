// "New style from examples…": make a steering vector in the agent panel. The writer gives pairs
// of examples (how it should sound ⇢ how it should not), asks for "in my voice" from their own
// paragraphs in this document, or describes the style in words (an instruction: a PSR vector that
// imitates what that instruction does inside the model); POST /api/vectors starts a build in a
// worker and answers at once,
// and this polls GET /api/vectors/{name} for its progress. When it is ready it is handed to the
// panel as a steering item with the strength guidance the backend serves.
import { h, nextId, announce } from './ui.js'

/** Pairs from text: one pair a line, the two sides split by "=>" (or a tab). */
export function parsePairs (text) {
  return text.split('\n').map((line) => line.trim()).filter(Boolean)
    .map((line) => line.includes('=>') ? line.split('=>') : line.split('\t'))
    .map((parts) => parts.map((p) => p.trim()))
}

export function styleMaker ({ api, docId, onReady }) {
  const nameId = nextId('style-name')
  const pairsId = nextId('style-pairs')
  const name = h('input', { id: nameId, name: 'name', type: 'text', placeholder: 'e.g. sunny', pattern: '[A-Za-z0-9_.\\-]{1,64}', autocomplete: 'off' })
  const pairs = h('textarea', { id: pairsId, rows: 4, placeholder: 'One pair a line: how it should sound => how it should not\nWhat a glorious morning! => What a grey morning.' })
  const voiceId = nextId('style-voice')
  const voice = h('input', { id: voiceId, type: 'checkbox', onchange: () => { pairs.disabled = voice.checked || !!instruction.value.trim() } })
  const instructionId = nextId('style-instruction')
  const instruction = h('input', {
    id: instructionId, name: 'instruction', type: 'text', maxlength: 300, autocomplete: 'off', placeholder: 'e.g. write about winter',
    oninput: () => { pairs.disabled = voice.checked || !!instruction.value.trim() },
  })
  const bar = h('progress', { max: 1, value: 0, hidden: true, 'aria-label': 'Building the style' })
  const note = h('p', { class: 'muted small style-status', role: 'status', 'aria-live': 'polite' })
  const build = h('button', { type: 'button', class: 'btn btn-secondary btn-small', dataset: { action: 'build-style' }, onclick: () => start() }, 'Build style')
  let timer = null

  async function start () {
    const body = { name: name.value.trim() }
    if (voice.checked) body.voice = { doc_ids: [docId] }
    else if (instruction.value.trim()) body.instruction = instruction.value.trim()
    else body.pairs = parsePairs(pairs.value)
    note.className = 'muted small style-status'
    try {
      const v = await api.post('/api/vectors', body)
      build.disabled = true
      show(v)
      poll(body.name)
    } catch (err) {
      note.className = 'error small style-status'
      note.textContent = err.unavailable ? 'Making styles isn’t available on this hub.' : `✕ ${err.message}`
    }
  }
  function show (v) {
    bar.hidden = v.status !== 'building'
    bar.value = v.progress || 0
    note.dataset.status = v.status
    note.textContent = v.status === 'building' ? `Building “${v.name}”… ${Math.round(100 * (v.progress || 0))}%`
      : v.status === 'ready' ? `✓ “${v.name}” is ready and added to the steering (recommended ${v.recommended?.join(' to ')})`
        : `✕ “${v.name}” failed: ${v.error || 'unknown error'}`
  }
  async function poll (vname) {
    try {
      const v = await api.get(`/api/vectors/${encodeURIComponent(vname)}`)
      show(v)
      if (v.status === 'building') { timer = setTimeout(() => poll(vname), 1000); return }
      build.disabled = false
      if (v.status === 'ready') { onReady(v); announce(`Style ${v.name} ready`) }
    } catch (err) {
      note.textContent = `⚠ Lost track of the build: ${err.message}`
      build.disabled = false
    }
  }

  const el = h('details', { class: 'style-maker' }, h('summary', {}, 'New style from examples…'),
    h('label', { for: nameId }, 'Name'), name,
    h('label', { for: pairsId }, 'Examples'), pairs,
    h('label', { class: 'radio', for: voiceId }, voice, ' In my voice: from what I wrote in this document'),
    h('label', { for: instructionId }, 'Or describe it (learns what this instruction does; takes minutes)'), instruction,
    h('div', { class: 'row' }, build, bar), note)
  return { el, destroy: () => clearTimeout(timer) }
}
