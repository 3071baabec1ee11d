// Share links per role, minted with the document's owner token (POST /api/docs/{id}/tokens).
// A link is /d/{id}?token=…; a viewer link opens the document read-only.
import { createApi, docPath } from './api.js'
import { h, setChildren, announce, nextId } from './ui.js'

export const shareUrl = (docId, token) => `${location.origin}/d/${encodeURIComponent(docId)}?token=${encodeURIComponent(token)}`

/** token: the credential the page uses (an owner token, or none on an open hub where guests own). */
export function sharePanel ({ docId, token, canShare }) {
  const el = h('div', { class: 'share' })
  if (!canShare) {
    el.append(h('p', { class: 'muted' }, 'Only the document’s owner can create share links. Ask them for an editor or viewer link.'))
    return { el }
  }
  const api = createApi(token)
  const nameId = nextId('share-name')
  const nameInput = h('input', { id: nameId, type: 'text', value: '', placeholder: 'e.g. Reviewer', maxLength: 60, autocomplete: 'off' })
  const result = h('div', { class: 'share-result', 'aria-live': 'polite' })
  const tokenList = h('ul', { class: 'token-list', 'aria-label': 'Links issued for this document' })

  async function create (role) {
    const name = nameInput.value.trim() || (role === 'viewer' ? 'Viewer' : 'Editor')
    try {
      const { token } = await api.post(docPath(docId, '/tokens'), { role, name })
      const url = shareUrl(docId, token)
      const linkId = nextId('link')
      const input = h('input', { id: linkId, type: 'text', readOnly: true, value: url, class: 'share-link', dataset: { role } })
      setChildren(result,
        h('label', { for: linkId }, role === 'viewer' ? '👁 View-only link for ' : '✎ Editor link for ', h('strong', {}, name)),
        h('div', { class: 'row' }, input,
          h('button', { type: 'button', class: 'btn btn-small', onclick: () => copy(input) }, 'Copy')))
      input.focus()
      input.select()
      announce(`${role} link created`)
      await refresh()
    } catch (err) {
      setChildren(result, h('p', { class: 'error', role: 'alert' }, `Could not create a link: ${err.message}`))
    }
  }

  async function copy (input) {
    try {
      await navigator.clipboard.writeText(input.value)
      announce('Link copied')
    } catch {
      input.select() // clipboard can be blocked; leave it selected for Ctrl+C
      announce('Press Control C to copy the selected link')
    }
  }

  async function refresh () {
    try {
      const { tokens } = await api.get(docPath(docId, '/tokens'))
      const live = tokens.filter((t) => !t.revoked && t.role !== 'owner')
      setChildren(tokenList, live.length
        ? live.map((t) => h('li', { class: 'token-item' },
          h('span', {}, t.role === 'viewer' ? '👁 ' : '✎ ', h('strong', {}, t.name), ` · ${t.role}`),
          h('button', {
            type: 'button', class: 'btn btn-small btn-ghost', 'aria-label': `Revoke ${t.role} link for ${t.name}`,
            onclick: async () => { await api.del(docPath(docId, `/tokens/${t.token_id}`)); announce('Link revoked'); refresh() },
          }, 'Revoke')))
        : h('li', { class: 'muted' }, 'No links shared yet.'))
    } catch (err) {
      setChildren(tokenList, h('li', { class: 'error' }, `Could not list links: ${err.message}`))
    }
  }

  el.append(
    h('p', { class: 'muted' }, 'Anyone with a link joins with its role. Viewers see the text, cursors and the review views, but cannot edit.'),
    h('label', { for: nameId }, 'Name for the person you share with'), nameInput,
    h('div', { class: 'row' },
      h('button', { type: 'button', class: 'btn', dataset: { share: 'editor' }, onclick: () => create('editor') }, '✎ Create editor link'),
      h('button', { type: 'button', class: 'btn btn-secondary', dataset: { share: 'viewer' }, onclick: () => create('viewer') }, '👁 Create viewer link')),
    result,
    h('h3', {}, 'Shared links'), tokenList)
  refresh()
  return { el }
}
