// The document page: header (title, presence, connection, files), the editor and review views
// as tabs, and a side panel with suggestions, agents and sharing.
import * as Y from 'yjs'
import { createApi, docPath } from './api.js'
import { localUser, ownerToken } from './identity.js'
import { openSession, describeConnection } from './session.js'
import { createEditor } from './editor.js'
import { presenceList } from './presence.js'
import { createSuggestions } from './suggestions.js'
import { sharePanel } from './share.js'
import { agentPanel } from './agents.js'
import { renameDocument, documentFromLocalFile } from './doclist.js'
import { saveLocalFile, fileNameFor, rememberHandle } from './files.js'
import { timelineView } from './review/timeline.js'
import { diffView } from './review/diff.js'
import { blameView } from './review/blame.js'
import { activityView } from './review/activity.js'
import { graphView } from './review/graph.js'
import { h, setChildren, tabs, announce, debounce, nextId } from './ui.js'

const WRITERS = new Set(['owner', 'editor', 'agent'])
const ROLE_BADGE = { owner: '★ Owner', editor: '✎ Editor', viewer: '👁 Viewer', agent: '🤖 Agent' }

export async function docPage ({ docId, navigate, nameField, importText = null, fileHandle = null }) {
  const urlToken = new URLSearchParams(location.search).get('token')
  const token = urlToken || ownerToken(docId)
  const api = createApi(token)

  let meta
  try {
    meta = await api.get(docPath(docId))
  } catch (err) {
    const msg = err.status === 404 ? 'This document doesn’t exist (or was deleted).'
      : err.status === 401 || err.status === 403 ? 'This link isn’t valid for this document (it may have been revoked or expired).'
        : `Could not open the document: ${err.message}`
    return { el: h('div', { class: 'card error-page', role: 'alert' }, h('h1', {}, 'Can’t open this document'), h('p', {}, msg), h('a', { href: '/' }, '← All documents')), destroy () {} }
  }
  const role = meta.role
  const canWrite = WRITERS.has(role)
  rememberHandle(docId, fileHandle)

  const session = openSession({ docId, token, user: localUser() })
  const suggestions = createSuggestions(session, { canWrite })
  const cleanups = [() => session.destroy(), () => suggestions.destroy()]

  // -- header ----------------------------------------------------------------------------------
  const titleId = nextId('title')
  const title = h('input', {
    id: titleId, class: 'doc-title-input', type: 'text', value: meta.title, maxLength: 200, readOnly: !canWrite,
    'aria-label': 'Document title', title: canWrite ? 'Rename: edit and press Enter' : meta.title,
  })
  const saveTitle = async () => {
    const t = title.value.trim() || 'Untitled'
    if (t === meta.title) return
    try {
      await renameDocument(docId, t, token)
      meta.title = t
      document.title = `${t} · tinymorph`
      announce(`Renamed to ${t}`)
    } catch (err) { title.value = meta.title; notice(`Could not rename: ${err.message}`, 'error') }
  }
  title.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); title.blur() } if (e.key === 'Escape') { title.value = meta.title; title.blur() } })
  title.addEventListener('change', saveTitle)
  document.title = `${meta.title} · tinymorph`

  const conn = h('span', { class: 'conn', role: 'status', 'aria-live': 'polite' })
  const noticeEl = h('p', { class: 'notice', hidden: true })
  function notice (text, tone = 'info') {
    noticeEl.hidden = !text
    noticeEl.textContent = text
    noticeEl.className = `notice notice-${tone}`
    noticeEl.setAttribute('role', tone === 'error' ? 'alert' : 'status')
  }
  cleanups.push(session.onState((s) => {
    const d = describeConnection(s)
    conn.dataset.tone = d.tone
    conn.dataset.status = s.closed ? 'closed' : s.status === 'connected' && s.synced ? 'connected' : s.lost ? 'offline' : 'connecting'
    setChildren(conn, h('span', { 'aria-hidden': 'true', class: 'conn-icon' }, d.icon), ' ', d.text)
    if (s.denied && canWrite) notice(`The hub refused an edit: ${s.denied}`, 'error')
  }))

  const presence = presenceList(session.awareness)
  cleanups.push(presence.destroy)

  const save = async (saveAs = false) => {
    try {
      const where = await saveLocalFile(docId, fileNameFor(meta.title), session.ytext.toString(), { saveAs })
      if (where) announce(where)
    } catch (err) { notice(`Could not save: ${err.message}`, 'error') }
  }
  const open = () => documentFromLocalFile(navigate).catch((err) => notice(`Could not open the file: ${err.message}`, 'error'))
  const fileButtons = h('div', { class: 'file-buttons', role: 'group', 'aria-label': 'Local files' },
    h('button', { type: 'button', class: 'btn btn-small btn-ghost', onclick: open, 'aria-keyshortcuts': 'Control+O', title: 'Open a local file as a new document (Ctrl+O)' }, '📂 Open'),
    h('button', { type: 'button', class: 'btn btn-small btn-ghost', onclick: () => save(false), 'aria-keyshortcuts': 'Control+S', title: 'Save as a local Markdown file (Ctrl+S)', dataset: { action: 'save' } }, '💾 Save'),
    h('button', { type: 'button', class: 'btn btn-small btn-ghost', onclick: () => save(true), 'aria-keyshortcuts': 'Control+Shift+S', title: 'Save to a new file (Ctrl+Shift+S)' }, 'Save as…'))

  const header = h('header', { class: 'topbar' },
    h('a', { href: '/', class: 'brand', onclick: (e) => { e.preventDefault(); navigate('/') } }, h('span', { 'aria-hidden': 'true' }, '←'), ' tinymorph'),
    h('div', { class: 'title-wrap' }, title, h('span', { class: `role-badge role-${role}`, dataset: { role } }, ROLE_BADGE[role] || role)),
    presence.el, conn, fileButtons, nameField)

  // -- editor + review tabs ---------------------------------------------------------------------
  const editorHost = h('div', { class: 'editor-host' })
  const writePanel = h('section', { class: 'write-panel' },
    !canWrite && h('p', { class: 'readonly-banner', dataset: { readonly: 'true' } }, h('span', { 'aria-hidden': 'true' }, '👁 '), h('strong', {}, 'View only.'), ' You can read, follow cursors and use the review views, but not edit.'),
    editorHost,
    h('p', { class: 'muted small editor-help' }, canWrite ? 'Markdown. Tab indents; press Esc then Tab to move on. Ctrl+Z / Ctrl+Shift+Z undo and redo your own edits.' : ''))
  const editor = createEditor(editorHost, session, { readOnly: !canWrite, extensions: [suggestions.extension], label: `${meta.title} — document text${canWrite ? '' : ' (read only)'}` })
  cleanups.push(() => editor.destroy())

  const reviewCtx = { api, docId, session, jumpTo: (at) => { mainTabs.select('write'); editor.jumpTo(at) } }
  const views = {
    timeline: timelineView(reviewCtx), diff: diffView(reviewCtx), blame: blameView(reviewCtx), activity: activityView(reviewCtx), graph: graphView(reviewCtx),
  }
  const panels = Object.fromEntries(Object.entries(views).map(([id, v]) => [id, h('section', { class: 'review-panel' }, v.el)]))
  const mainItems = [
    { id: 'write', label: 'Write', icon: '✎', panel: writePanel, panelFocusable: false },
    { id: 'timeline', label: 'Timeline', icon: '⏱', panel: panels.timeline },
    { id: 'diff', label: 'Diff', icon: '±', panel: panels.diff },
    { id: 'blame', label: 'Blame', icon: '🖍', panel: panels.blame },
    { id: 'activity', label: 'Activity', icon: '📊', panel: panels.activity },
    { id: 'graph', label: 'Graph', icon: '🕸', panel: panels.graph },
  ]
  let visible = null
  const initial = location.hash.slice(1) // read before the tabs rewrite the address
  const mainTabs = tabs('Views', mainItems, {
    onChange: (id) => {
      if (visible && visible !== views[id]) visible.hide?.()
      visible = views[id] || null
      visible?.refresh()
      if (history.replaceState) history.replaceState(history.state, '', id === 'write' ? location.pathname + location.search : `#${id}`)
    },
  })
  if (views[initial]) mainTabs.select(initial)
  // Live review: refresh the visible view a moment after the document changes.
  const liveRefresh = debounce(() => { if (visible && visible.live) visible.refresh() }, 1500)
  session.ydoc.on('update', liveRefresh)
  cleanups.push(() => { liveRefresh.cancel(); session.ydoc.off('update', liveRefresh); visible?.hide?.() })

  // -- side panel -------------------------------------------------------------------------------
  const margin = suggestions.marginList()
  const agentsP = agentPanel({ docId, token, session, canWrite, getSelection: () => editor.view.state.selection.main })
  cleanups.push(agentsP.destroy)
  const share = sharePanel({ docId, token, canShare: role === 'owner' })
  const sideItems = [
    { id: 'suggestions', label: 'Suggestions', icon: '💬', panel: h('section', {}, margin.el) },
    { id: 'agents', label: 'Agents', icon: '🤖', panel: h('section', {}, agentsP.el) },
    { id: 'share', label: 'Share', icon: '🔗', panel: h('section', {}, share.el) },
  ]
  const sideTabs = tabs('Assistants and sharing', sideItems)
  const countBadge = h('span', { class: 'count-badge', 'aria-label': 'pending' })
  sideTabs.el.querySelector('[data-tab="suggestions"]').append(countBadge)
  const paintCount = () => { const n = margin.count(); countBadge.textContent = n ? ` ${n}` : ''; countBadge.hidden = !n }
  cleanups.push(suggestions.onChange(paintCount))
  session.ytext.observe(paintCount)
  paintCount()

  const el = h('div', { class: 'doc-page' }, header,
    h('div', { class: 'layout' },
      h('main', { id: 'main', class: 'main', tabIndex: -1 }, mainTabs.el, noticeEl, ...mainItems.map((i) => i.panel)),
      h('aside', { class: 'side', 'aria-label': 'Suggestions, agents and sharing' }, sideTabs.el, ...sideItems.map((i) => i.panel))))

  // Keyboard shortcuts for local files.
  const onKey = (e) => {
    if (!(e.ctrlKey || e.metaKey)) return
    const k = e.key.toLowerCase()
    if (k === 's') { e.preventDefault(); save(e.shiftKey) } else if (k === 'o') { e.preventDefault(); open() }
  }
  window.addEventListener('keydown', onKey)
  cleanups.push(() => window.removeEventListener('keydown', onKey))

  // A document started from a local file gets its text once we know the shared copy is empty.
  if (importText != null && canWrite) {
    session.whenSynced().then(() => {
      if (session.ytext.length === 0) session.ydoc.transact(() => session.ytext.insert(0, importText))
    })
  }

  // For tests and the curious: the live objects behind the page.
  window.tinymorph = { Y, session, editor, suggestions, role }

  return {
    el,
    focus: () => editor.view.focus(),
    setUser: (u) => session.setUser(u),
    destroy () { cleanups.reverse().forEach((fn) => fn()) },
  }
}
