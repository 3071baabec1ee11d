// The hub's REST API. Errors carry the HTTP status; `unavailable` marks a 404 that came from
// routing (no JSON error body) — the endpoint doesn't exist on this hub yet, as opposed to
// "unknown document", which the API answers with a JSON error.

export class ApiError extends Error {
  constructor (status, type, message, unavailable = false) {
    super(message)
    this.status = status
    this.type = type
    this.unavailable = unavailable
  }
}

/** An API client that sends `token` (if any) as a bearer credential. */
export function createApi (token = null) {
  async function request (method, path, { body, query } = {}) {
    const url = new URL(path, location.origin)
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v)
    }
    const headers = { accept: 'application/json' }
    if (body !== undefined) headers['content-type'] = 'application/json'
    if (token) headers.authorization = `Bearer ${token}`
    let res
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    } catch (err) {
      throw new ApiError(0, 'NetworkError', `The hub can't be reached (${err.message})`)
    }
    if (res.status === 204) return null
    const raw = await res.text()
    let data = null
    try { data = raw ? JSON.parse(raw) : null } catch { data = null }
    if (!res.ok) {
      const err = data && data.error
      // 503 Unavailable: the hub has the endpoint but not the part behind it (e.g. no embeddings)
      const unavailable = ((res.status === 404 || res.status === 405) && !err) || res.status === 503 || err?.type === 'Unavailable'
      throw new ApiError(res.status, err ? err.type : 'HTTPError',
        err ? err.message : unavailable ? `${method} ${url.pathname} is not available on this hub` : `${res.status} ${res.statusText}`,
        unavailable)
    }
    return data
  }
  return {
    token,
    get: (path, query) => request('GET', path, { query }),
    post: (path, body) => request('POST', path, { body }),
    patch: (path, body) => request('PATCH', path, { body }),
    del: (path) => request('DELETE', path),
  }
}

export const docPath = (docId, rest = '') => `/api/docs/${encodeURIComponent(docId)}${rest}`
