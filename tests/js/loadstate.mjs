// Reads a Yjs update (base64) on stdin, applies it to a fresh stock Y.Doc and prints its text:
// the fuzzer's check that what the hub holds still loads in a stock yjs client.
import * as Y from 'yjs'

let input = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => { input += chunk })
process.stdin.on('end', () => {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, Buffer.from(input.trim(), 'base64'))
  process.stdout.write(JSON.stringify({ text: doc.getText('content').toString() }) + '\n')
})
