// Who this browser is: a display name and colour kept in localStorage, and the document tokens
// it holds (owner tokens are remembered for documents created here, so their share links work).

const NAME_KEY = 'tinymorph:name'
const ACCOUNT_KEY = 'tinymorph:account-token'
const ownerKey = (docId) => `tinymorph:owner:${docId}`

// Colours with at least 4.5:1 contrast against white text (caret labels are white on colour).
const PALETTE = ['#b4235a', '#1d4ed8', '#0f766e', '#9a3412', '#6d28d9', '#166534', '#a21caf', '#0e7490']

function hash (s) {
  let x = 2166136261
  for (const c of s) x = Math.imul(x ^ c.codePointAt(0), 16777619)
  return x >>> 0
}

export function colourFor (name) {
  const color = PALETTE[hash(name) % PALETTE.length]
  return { color, colorLight: color + '33' }
}

function store () {
  try { return window.localStorage } catch { return null } // storage can be blocked
}

export function userName () {
  let name = store()?.getItem(NAME_KEY)
  if (!name) {
    name = `Guest ${1000 + (hash(String(Math.random())) % 9000)}`
    store()?.setItem(NAME_KEY, name)
  }
  return name
}

export function setUserName (name) {
  const clean = name.trim().slice(0, 60)
  if (clean) store()?.setItem(NAME_KEY, clean)
  return userName()
}

/** The awareness `user` field for this browser (y-codemirror.next's shape plus `kind`). */
export function localUser () {
  const name = userName()
  return { name, ...colourFor(name), kind: 'human' }
}

export const accountToken = () => store()?.getItem(ACCOUNT_KEY) || null
export const setAccountToken = (token) => token ? store()?.setItem(ACCOUNT_KEY, token) : store()?.removeItem(ACCOUNT_KEY)
export const ownerToken = (docId) => store()?.getItem(ownerKey(docId)) || null
export const rememberOwnerToken = (docId, token) => store()?.setItem(ownerKey(docId), token)
