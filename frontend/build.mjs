// Build the browser bundle into dist/: esbuild bundles src/main.js and src/styles.css, and the
// HTML shell is copied as is. `node build.mjs --watch` rebuilds on change.
import { build, context } from 'esbuild'
import { copyFile, mkdir, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = dirname(fileURLToPath(import.meta.url))
const dist = join(root, 'dist')
const watch = process.argv.includes('--watch')

const options = {
  absWorkingDir: root,
  entryPoints: { app: 'src/main.js', styles: 'src/styles.css' },
  outdir: join(dist, 'assets'),
  bundle: true,
  format: 'esm',
  target: ['chrome110', 'firefox115', 'safari16'],
  minify: !watch,
  sourcemap: true,
  legalComments: 'linked',
  logLevel: 'info',
}

await rm(dist, { recursive: true, force: true })
await mkdir(dist, { recursive: true })
await copyFile(join(root, 'index.html'), join(dist, 'index.html'))
if (watch) {
  const ctx = await context(options)
  await ctx.watch()
} else {
  await build(options)
}
