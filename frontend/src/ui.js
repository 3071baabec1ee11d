// Tiny DOM helpers: no framework, so every element is built with h() and wired by hand.

/**
 * h('button', {class: 'x', onclick, 'aria-label': 'y'}, 'text', child, [more]) → element.
 * Attributes starting with "on" become listeners; null/false attributes and children are skipped.
 */
export function h (tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value)
    else if (key === 'class') el.className = value
    else if (key === 'dataset') Object.assign(el.dataset, value)
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value)
    else if (key in el && typeof value !== 'string') el[key] = value // value, checked, disabled…
    else el.setAttribute(key, value === true ? '' : value)
  }
  append(el, children)
  return el
}

function append (el, children) {
  for (const child of children) {
    if (child == null || child === false) continue
    if (Array.isArray(child)) append(el, child)
    else el.append(child instanceof Node ? child : String(child))
  }
}

/** Replace an element's children. */
export function setChildren (el, ...children) {
  el.replaceChildren()
  append(el, children)
  return el
}

let uid = 0
/** A page-unique id for label/aria wiring. */
export const nextId = (prefix = 'tm') => `${prefix}-${++uid}`

/** Say something to screen readers through the page's polite live region. */
export function announce (message) {
  const region = document.getElementById('announcer')
  if (!region) return
  region.textContent = ''
  // a fresh text node after clearing makes screen readers repeat identical messages
  requestAnimationFrame(() => { region.textContent = message })
}

/** Call fn at most once per `ms`, after the calls stop. */
export function debounce (fn, ms) {
  let timer = null
  const wrapped = (...args) => {
    clearTimeout(timer)
    timer = setTimeout(() => fn(...args), ms)
  }
  wrapped.cancel = () => clearTimeout(timer)
  return wrapped
}

export const formatTime = (iso) => {
  const d = new Date(iso)
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' })
}

/** The visible "who" marker: a robot for agents, a person glyph for people — never colour alone. */
export const kindIcon = (kind) => kind === 'agent' ? '🤖' : kind === 'system' ? '⚙' : '👤'
export const kindLabel = (kind) => kind === 'agent' ? 'agent' : kind === 'system' ? 'system' : 'person'

/**
 * An ARIA tablist (APG pattern): arrow keys, Home and End move between tabs, activation is
 * automatic. tabs: [{id, label, panel}] → {el, select(id), onChange}.
 */
export function tabs (label, items, { onChange = () => {}, orientation = 'horizontal' } = {}) {
  const list = h('div', { role: 'tablist', 'aria-label': label, 'aria-orientation': orientation, class: 'tablist' })
  const buttons = items.map((item) => {
    const tabId = nextId('tab')
    const panelId = item.panel.id || (item.panel.id = nextId('panel'))
    item.panel.setAttribute('role', 'tabpanel')
    item.panel.setAttribute('aria-labelledby', tabId)
    item.panel.tabIndex = item.panelFocusable === false ? -1 : 0
    return h('button', {
      type: 'button', role: 'tab', id: tabId, class: 'tab', 'aria-controls': panelId, dataset: { tab: item.id },
      onclick: () => select(item.id, true),
    }, item.icon ? h('span', { 'aria-hidden': 'true', class: 'tab-icon' }, item.icon) : null, item.label)
  })
  list.append(...buttons)
  list.addEventListener('keydown', (e) => {
    const i = buttons.indexOf(document.activeElement)
    if (i < 0) return
    const next = { ArrowRight: i + 1, ArrowDown: i + 1, ArrowLeft: i - 1, ArrowUp: i - 1, Home: 0, End: buttons.length - 1 }[e.key]
    if (next === undefined) return
    e.preventDefault()
    const j = (next + buttons.length) % buttons.length
    buttons[j].focus()
    select(items[j].id, true)
  })
  let current = null
  function select (id, fromUser = false) {
    items.forEach((item, i) => {
      const on = item.id === id
      buttons[i].setAttribute('aria-selected', String(on))
      buttons[i].tabIndex = on ? 0 : -1
      item.panel.hidden = !on
    })
    if (current !== id) {
      current = id
      onChange(id, fromUser)
    }
  }
  select(items[0].id)
  return { el: list, select, get current () { return current } }
}
