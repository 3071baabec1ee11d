// Local files: open and save with the File System Access API where the browser has it (so "Save"
// writes back to the file you opened), else an <input type=file> and a download.

const TYPES = [{ description: 'Markdown or text', accept: { 'text/markdown': ['.md', '.markdown'], 'text/plain': ['.txt'] } }]
const handles = new Map() // docId → FileSystemFileHandle, for the life of the page

export const hasFileSystemAccess = () => typeof window.showOpenFilePicker === 'function' && typeof window.showSaveFilePicker === 'function'

/** Ask for a file; resolves {name, text, handle|null}, or null if the person cancelled. */
export async function openLocalFile () {
  if (hasFileSystemAccess()) {
    try {
      const [handle] = await window.showOpenFilePicker({ types: TYPES, multiple: false })
      const file = await handle.getFile()
      return { name: file.name, text: await file.text(), handle }
    } catch (err) {
      if (err.name === 'AbortError') return null
      throw err
    }
  }
  return new Promise((resolve) => {
    const input = Object.assign(document.createElement('input'), { type: 'file', accept: '.md,.markdown,.txt,text/*' })
    input.className = 'visually-hidden'
    input.dataset.fileInput = 'open'
    input.addEventListener('change', async () => {
      const file = input.files && input.files[0]
      input.remove()
      resolve(file ? { name: file.name, text: await file.text(), handle: null } : null)
    })
    input.addEventListener('cancel', () => { input.remove(); resolve(null) })
    document.body.append(input)
    input.click()
  })
}

export const rememberHandle = (docId, handle) => { if (handle) handles.set(docId, handle) }

/**
 * Save `text`. With File System Access: to the file this document came from (unless saveAs),
 * else to a file the person picks. Without it: as a download. Resolves a description of where.
 */
export async function saveLocalFile (docId, suggestedName, text, { saveAs = false } = {}) {
  if (hasFileSystemAccess()) {
    let handle = saveAs ? null : handles.get(docId)
    try {
      if (!handle) handle = await window.showSaveFilePicker({ suggestedName, types: TYPES })
    } catch (err) {
      if (err.name === 'AbortError') return null
      throw err
    }
    const writable = await handle.createWritable()
    await writable.write(text)
    await writable.close()
    handles.set(docId, handle)
    return `Saved to ${handle.name}`
  }
  const url = URL.createObjectURL(new Blob([text], { type: 'text/markdown;charset=utf-8' }))
  const a = Object.assign(document.createElement('a'), { href: url, download: suggestedName })
  document.body.append(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
  return `Downloaded ${suggestedName}`
}

/** "My essay: draft 2" → "My essay- draft 2.md" (safe on every file system). */
export const fileNameFor = (title) => `${(title || 'Untitled').replace(/[\\/:*?"<>|]+/g, '-').trim().slice(0, 100) || 'Untitled'}.md`
export const titleFromFileName = (name) => name.replace(/\.(md|markdown|txt)$/i, '') || 'Untitled'
