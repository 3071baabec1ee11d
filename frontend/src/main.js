// Entry point: a two-route single-page app — "/" lists documents, "/d/{id}" edits one.
import { docListPage } from './doclist.js'
import { docPage } from './docpage.js'
import { localUser, setUserName, userName } from './identity.js'
import { documentFromLocalFile } from './doclist.js'
import { h, nextId } from './ui.js'

const app = document.getElementById('app')
let page = null

/** The "your name" field, shared by both pages; renames you live in the open document. */
function nameField () {
  const id = nextId('username')
  const input = h('input', { id, type: 'text', value: userName(), maxLength: 60, autocomplete: 'nickname', class: 'name-input' })
  input.addEventListener('change', () => {
    input.value = setUserName(input.value)
    page?.setUser?.(localUser())
  })
  return h('div', { class: 'name-field' }, h('label', { for: id }, 'Your name'), input)
}

export function navigate (path, state = {}) {
  history.pushState({}, '', path)
  render(state)
}

async function render (state = {}) {
  page?.destroy()
  page = null
  // A ?name= in the address sets the display name (handy for demos and tests).
  const params = new URLSearchParams(location.search)
  if (params.get('name')) setUserName(params.get('name'))
  app.setAttribute('aria-busy', 'true')
  const m = location.pathname.match(/^\/d\/([^/]+)\/?$/)
  let next
  if (m) {
    next = await docPage({ docId: decodeURIComponent(m[1]), navigate, nameField: nameField(), ...state })
  } else {
    document.title = 'tinymorph'
    const list = docListPage({ navigate })
    const onKey = (e) => { if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'o') { e.preventDefault(); documentFromLocalFile(navigate) } }
    window.addEventListener('keydown', onKey)
    next = {
      el: h('div', { class: 'home-page' },
        h('header', { class: 'topbar' }, h('span', { class: 'brand' }, 'tinymorph'), h('span', { class: 'tagline' }, 'write with people and steerable AI co-editors'), nameField()),
        h('main', { id: 'main', tabIndex: -1 }, list.el)),
      destroy () { window.removeEventListener('keydown', onKey); list.destroy() },
    }
  }
  page = next
  app.replaceChildren(page.el)
  app.setAttribute('aria-busy', 'false')
  page.focus?.()
}

window.addEventListener('popstate', () => render())
render()
