// A Playwright bridge for the pytest end-to-end tests (tests/test_frontend_e2e.py): it drives
// Debian's Chromium through playwright-core and takes commands as JSON lines on stdin, answering
// each with one JSON line {id, ok, result | error} on stdout. Every page gets its own browser
// context (its own storage), so two pages are two separate people.
import { createInterface } from 'node:readline'
import { chromium } from 'playwright-core'

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium'
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
})
const pages = new Map() // name → {context, page, errors: [], console: []}
const downloads = new Map() // name → latest download {filename, text}
const downloadWaiters = new Map() // name → resolve functions waiting for the next download

const out = (msg) => process.stdout.write(JSON.stringify(msg) + '\n')
const page = (name) => {
  const p = pages.get(name)
  if (!p) throw new Error(`no page named ${name}`)
  return p.page
}
// `js` is a function's source; it runs in the page with `arg`.
const call = (js, arg) => `(${js})(${JSON.stringify(arg ?? null)})`

const commands = {
  async open ({ name, url, init, viewport = { width: 1360, height: 860 } }) {
    const context = await browser.newContext({ viewport, acceptDownloads: true, reducedMotion: 'reduce' })
    if (init) await context.addInitScript(init) // runs before the app's scripts, e.g. to remove APIs
    const pg = await context.newPage()
    const rec = { context, page: pg, errors: [], console: [] }
    pg.on('pageerror', (err) => rec.errors.push(String(err && err.stack || err)))
    pg.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') rec.console.push(`${m.type()}: ${m.text()}`) })
    pg.on('download', async (d) => {
      try {
        const stream = await d.createReadStream()
        const chunks = []
        for await (const c of stream) chunks.push(c)
        downloads.set(name, { filename: d.suggestedFilename(), text: Buffer.concat(chunks).toString('utf8') })
      } catch (err) { downloads.set(name, { error: String(err) }) }
      for (const resolve of downloadWaiters.get(name) || []) resolve(downloads.get(name))
      downloadWaiters.delete(name)
    })
    pages.set(name, rec)
    if (url) await pg.goto(url, { waitUntil: 'domcontentloaded' })
    return true
  },
  async goto ({ name, url }) { await page(name).goto(url, { waitUntil: 'domcontentloaded' }); return true },
  async eval ({ name, js, arg }) { return await page(name).evaluate(call(js, arg)) },
  async wait ({ name, js, arg, ms = 30000 }) {
    const handle = await page(name).waitForFunction(call(js, arg), null, { timeout: ms, polling: 100 })
    return await handle.jsonValue()
  },
  async waitSelector ({ name, selector, state = 'visible', ms = 30000 }) {
    await page(name).locator(selector).first().waitFor({ state, timeout: ms })
    return true
  },
  async click ({ name, selector, ms = 30000 }) { await page(name).locator(selector).first().click({ timeout: ms }); return true },
  async fill ({ name, selector, value, ms = 30000 }) { await page(name).locator(selector).first().fill(value, { timeout: ms }); return true },
  async select ({ name, selector, value, ms = 30000 }) { return await page(name).locator(selector).first().selectOption(value, { timeout: ms }) },
  async focus ({ name, selector }) { await page(name).locator(selector).first().focus(); return true },
  async type ({ name, text, delay = 15 }) { await page(name).keyboard.type(text, { delay }); return true },
  async press ({ name, key }) { await page(name).keyboard.press(key); return true },
  /** Click `selector`, answer the file chooser it opens with `files` [{name, text}]. */
  async chooseFiles ({ name, selector, files, ms = 30000 }) {
    const pg = page(name)
    const [chooser] = await Promise.all([pg.waitForEvent('filechooser', { timeout: ms }), pg.locator(selector).first().click({ timeout: ms })])
    await chooser.setFiles(files.map((f) => ({ name: f.name, mimeType: f.mimeType || 'text/markdown', buffer: Buffer.from(f.text) })))
    return true
  },
  /** The next download's {filename, text}; call `expectDownload` before the action that starts it. */
  async expectDownload ({ name }) {
    downloads.delete(name)
    const pending = new Promise((resolve) => downloadWaiters.set(name, [...(downloadWaiters.get(name) || []), resolve]))
    pages.get(name).nextDownload = pending
    return true
  },
  async download ({ name, ms = 30000 }) {
    const pending = pages.get(name).nextDownload
    if (!pending) throw new Error('expectDownload first')
    return await Promise.race([pending, new Promise((_, reject) => setTimeout(() => reject(new Error(`no download in ${ms} ms`)), ms))])
  },
  async screenshot ({ name, path, fullPage = false }) { await page(name).screenshot({ path, fullPage }); return path },
  async errors ({ name }) { const p = pages.get(name); return { errors: p.errors, console: p.console } },
  async close ({ name }) { const p = pages.get(name); if (p) { await p.context.close(); pages.delete(name) } return true },
  async quit () { await browser.close(); setImmediate(() => process.exit(0)); return true },
}

out({ ready: true, version: browser.version() })
const rl = createInterface({ input: process.stdin })
// Commands run one at a time, in order: a test reads like a script.
let chain = Promise.resolve()
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let msg
    try { msg = JSON.parse(line) } catch { return out({ ok: false, error: `bad JSON: ${line}` }) }
    const fn = commands[msg.cmd]
    if (!fn) return out({ id: msg.id, ok: false, error: `unknown command ${msg.cmd}` })
    try {
      out({ id: msg.id, ok: true, result: await fn(msg) ?? null })
    } catch (err) {
      out({ id: msg.id, ok: false, error: String(err && err.message || err) })
    }
  })
})
rl.on('close', async () => { await chain; await browser.close().catch(() => {}); process.exit(0) })
