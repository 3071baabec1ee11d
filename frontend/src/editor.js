// The CodeMirror 6 editor bound to the shared Y.Text: markdown highlighting, collaborative undo,
// remote cursors, suggestions; read-only for viewers.
import * as Y from 'yjs'
import { Compartment, EditorState } from '@codemirror/state'
import { EditorView } from 'codemirror' // the pinned meta package (6.0.2) re-exports the view
import { keymap, drawSelection, dropCursor, highlightActiveLine, highlightSpecialChars } from '@codemirror/view'
import { markdown } from '@codemirror/lang-markdown'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { HighlightStyle, syntaxHighlighting, indentOnInput } from '@codemirror/language'
import { searchKeymap, highlightSelectionMatches } from '@codemirror/search'
import { tags as t } from '@lezer/highlight'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { remoteCursors } from './presence.js'

// Prose, not code: no line numbers or folding; markdown marks styled but quiet.
const prose = HighlightStyle.define([
  { tag: t.heading1, fontSize: '1.6em', fontWeight: '700' },
  { tag: t.heading2, fontSize: '1.3em', fontWeight: '700' },
  { tag: [t.heading3, t.heading4, t.heading5, t.heading6], fontWeight: '700' },
  { tag: t.emphasis, fontStyle: 'italic' },
  { tag: t.strong, fontWeight: '700' },
  { tag: t.strikethrough, textDecoration: 'line-through' },
  { tag: [t.link, t.url], color: '#1d4ed8', textDecoration: 'underline' },
  { tag: t.monospace, fontFamily: 'ui-monospace, monospace', fontSize: '0.9em', backgroundColor: '#f1ede4' },
  { tag: t.quote, color: '#4b5563', fontStyle: 'italic' },
  { tag: [t.processingInstruction, t.meta, t.contentSeparator], color: '#8a8f98' },
  { tag: t.list, color: '#234e52' },
])

const theme = EditorView.theme({
  '&': { fontSize: '17px', height: '100%', backgroundColor: 'var(--paper)' },
  '.cm-scroller': { fontFamily: 'var(--font-text)', lineHeight: '1.7', padding: '1.5rem 0' },
  '.cm-content': { maxWidth: '46rem', margin: '0 auto', padding: '0 2rem', caretColor: 'var(--ink)' },
  '.cm-gutters': { backgroundColor: 'transparent', border: 'none', color: 'var(--muted)' },
  '.cm-activeLine': { backgroundColor: 'rgba(35, 78, 82, 0.045)' },
  '.cm-activeLineGutter': { backgroundColor: 'transparent' },
  '&.cm-focused': { outline: 'none' },
})

/**
 * Mount an editor for `session` into `parent`. extraExtensions: e.g. suggestions.
 * Returns {view, setReadOnly(bool), jumpTo(index), destroy()}.
 */
export function createEditor (parent, session, { readOnly = false, extensions = [], label = 'Document text' } = {}) {
  const { ytext, awareness } = session
  const undoManager = new Y.UndoManager(ytext)
  const editable = new Compartment()
  const readOnlyState = (ro) => [EditorState.readOnly.of(ro), EditorView.editable.of(!ro)]

  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [
        keymap.of([...yUndoManagerKeymap, ...defaultKeymap, ...searchKeymap, indentWithTab]),
        highlightSpecialChars(),
        drawSelection(),
        dropCursor(),
        highlightActiveLine(),
        highlightSelectionMatches(),
        indentOnInput(),
        EditorState.allowMultipleSelections.of(true),
        syntaxHighlighting(prose),
        markdown(),
        EditorView.lineWrapping,
        theme,
        // awareness is null here on purpose: remoteCursors() below draws carets with agent marks
        yCollab(ytext, null, { undoManager }),
        remoteCursors(ytext, awareness),
        editable.of(readOnlyState(readOnly)),
        EditorView.contentAttributes.of({ 'aria-label': label, 'aria-multiline': 'true' }),
        ...extensions,
      ],
    }),
  })

  return {
    view,
    setReadOnly (ro) { view.dispatch({ effects: editable.reconfigure(readOnlyState(ro)) }) },
    /** Put the cursor at a character offset, scroll it into view and focus the editor. */
    jumpTo (from, to = from) {
      const len = view.state.doc.length
      view.dispatch({ selection: { anchor: Math.min(from, len), head: Math.min(to, len) }, scrollIntoView: true })
      view.focus()
    },
    destroy () { view.destroy(); undoManager.destroy() },
  }
}
