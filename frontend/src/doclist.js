// The document list: create, open, rename, and start a document from a local file.
import { createApi, docPath } from './api.js'
import { accountToken, ownerToken, rememberOwnerToken, setAccountToken } from './identity.js'
import { openLocalFile, titleFromFileName } from './files.js'
import { h, setChildren, announce, nextId, formatTime } from './ui.js'

/** Create a document and remember its owner token; resolves its id. */
export async function createDocument (title) {
  const doc = await createApi(accountToken()).post('/api/docs', { title: title || 'Untitled' })
  rememberOwnerToken(doc.id, doc.owner_token)
  return doc.id
}

/** Rename with the best credential this browser has for the document. */
export async function renameDocument (docId, title, token = null) {
  return createApi(token || ownerToken(docId) || accountToken()).patch(docPath(docId), { title })
}

/** Open a local file as a new shared document; the text is inserted once the editor has synced. */
export async function documentFromLocalFile (navigate) {
  const file = await openLocalFile()
  if (!file) return
  const id = await createDocument(titleFromFileName(file.name))
  navigate(`/d/${id}`, { importText: file.text, fileHandle: file.handle })
}

export function docListPage ({ navigate }) {
  const list = h('ul', { class: 'doc-list', 'aria-label': 'Documents' })
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading documents…')
  const titleId = nextId('new-title')
  const titleInput = h('input', { id: titleId, type: 'text', placeholder: 'Untitled', maxLength: 200, autocomplete: 'off' })
  const error = h('p', { class: 'error', role: 'alert', hidden: true })

  const showError = (msg) => { error.textContent = msg; error.hidden = !msg }

  const form = h('form', {
    class: 'new-doc', 'aria-label': 'New document',
    onsubmit: async (e) => {
      e.preventDefault()
      try { navigate(`/d/${await createDocument(titleInput.value.trim())}`) } catch (err) { showError(`Could not create the document: ${err.message}`) }
    },
  },
  h('label', { for: titleId }, 'Title of a new document'),
  h('div', { class: 'row' }, titleInput, h('button', { type: 'submit', class: 'btn', id: 'create-doc' }, '+ Create')),
  h('div', { class: 'row' }, h('button', {
    type: 'button', class: 'btn btn-secondary', 'aria-keyshortcuts': 'Control+O',
    onclick: () => documentFromLocalFile(navigate).catch((err) => showError(`Could not open the file: ${err.message}`)),
  }, '📂 Open a local file…')))

  function item (doc) {
    const link = h('a', {
      href: `/d/${doc.id}`, class: 'doc-link', dataset: { docId: doc.id },
      onclick: (e) => { if (!e.ctrlKey && !e.metaKey && !e.shiftKey && e.button === 0) { e.preventDefault(); navigate(`/d/${doc.id}`) } },
    }, h('span', { class: 'doc-title' }, doc.title || 'Untitled'), h('span', { class: 'doc-date' }, `created ${formatTime(doc.created_at)}`))
    const li = h('li', { class: 'doc-item' }, link)
    const renameBtn = h('button', {
      type: 'button', class: 'btn btn-small btn-ghost', 'aria-label': `Rename “${doc.title}”`,
      onclick: () => startRename(),
    }, '✎ Rename')
    li.append(renameBtn)
    function startRename () {
      const id = nextId('rename')
      const input = h('input', { id, type: 'text', value: doc.title, maxLength: 200 })
      const done = () => { setChildren(li, link, renameBtn); renameBtn.focus() }
      const editForm = h('form', {
        class: 'row rename-form',
        onsubmit: async (e) => {
          e.preventDefault()
          try {
            await renameDocument(doc.id, input.value.trim() || 'Untitled')
            doc.title = input.value.trim() || 'Untitled'
            link.querySelector('.doc-title').textContent = doc.title
            renameBtn.setAttribute('aria-label', `Rename “${doc.title}”`)
            announce(`Renamed to ${doc.title}`)
            done()
          } catch (err) { showError(`Could not rename: ${err.message}`) }
        },
        onkeydown: (e) => { if (e.key === 'Escape') done() },
      }, h('label', { for: id, class: 'visually-hidden' }, 'New title'), input,
      h('button', { type: 'submit', class: 'btn btn-small' }, 'Save'),
      h('button', { type: 'button', class: 'btn btn-small btn-ghost', onclick: done }, 'Cancel'))
      setChildren(li, editForm)
      input.focus()
      input.select()
    }
    return li
  }

  async function load () {
    try {
      const { documents } = await createApi(accountToken()).get('/api/docs')
      documents.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)))
      setChildren(list, documents.map(item))
      status.textContent = documents.length ? `${documents.length} document${documents.length === 1 ? '' : 's'}` : 'No documents yet — create one above.'
    } catch (err) {
      status.textContent = ''
      showError(err.status === 401 || err.status === 403
        ? 'This hub needs a token to list documents. Open a share link, or paste a user token below.'
        : `Could not load documents: ${err.message}`)
    }
  }
  load()

  const tokenId = nextId('account-token')
  const tokenInput = h('input', { id: tokenId, type: 'password', value: accountToken() || '', autocomplete: 'off' })
  const account = h('details', { class: 'account' }, h('summary', {}, 'Hub in tokens mode? Use a user token'),
    h('form', { onsubmit: (e) => { e.preventDefault(); setAccountToken(tokenInput.value.trim()); showError(''); load() } },
      h('label', { for: tokenId }, 'User token (from ', h('code', {}, 'tinymorph token'), ')'),
      h('div', { class: 'row' }, tokenInput, h('button', { type: 'submit', class: 'btn btn-small' }, 'Use token'))))

  const el = h('div', { class: 'home' },
    h('section', { class: 'card', 'aria-labelledby': 'home-new' }, h('h2', { id: 'home-new' }, 'Start writing'), form, error),
    h('section', { class: 'card', 'aria-labelledby': 'home-docs' }, h('h2', { id: 'home-docs' }, 'Documents'), status, list), account)
  return { el, refresh: load, destroy () {} }
}
