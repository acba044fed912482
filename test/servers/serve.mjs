#!/usr/bin/env node
// Starts the offline test servers on 127.0.0.1 and prints one JSON line with their endpoints:
//   {"s3":"http://127.0.0.1:P","gcs":"http://127.0.0.1:Q"}
// Runs until stdin closes or it gets SIGTERM/SIGINT, so the parent (vitest globalSetup, the
// demo, the benchmarks) owns its lifetime. `--only s3` / `--only gcs` starts one.
// Why a child process: the GCS emulator lives in firebase-tools, a large CommonJS tree with global
// state and its own temp dir; keeping it out of the test process keeps both clean.
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const missing = (what) => {
  console.error(`${what} missing: run \`node scripts/ensure-test-servers.mjs\` (npm test does it for you)`)
  process.exit(3)
}
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined
const out = {}
const stops = []

if (!only || only === 's3') {
  // fauxqs imports node:sqlite at load time for its optional on-disk persistence, which we never
  // use; Node 20 has no such module, so give it an inert stand-in there (Node >= 22.5 has the real one).
  try {
    await import('node:sqlite')
  } catch {
    const { register } = await import('node:module')
    const stub = 'data:text/javascript,export class DatabaseSync { constructor() { throw new Error("node:sqlite is not available on this Node") } }'
    const hooks = `export async function resolve(spec, ctx, next) { return spec === 'node:sqlite' ? { url: ${JSON.stringify(stub)}, shortCircuit: true } : next(spec, ctx) }`
    register(`data:text/javascript,${encodeURIComponent(hooks)}`)
  }
  // fauxqs is installed apart, in test/servers/s3 (see scripts/ensure-test-servers.mjs); it is
  // ESM-only, so it is imported by file rather than resolved with require.
  const entry = path.join(here, 's3', 'node_modules', 'fauxqs', 'dist', 'app.js')
  if (!existsSync(entry)) missing('S3 test server (fauxqs)')
  const { buildApp } = await import(pathToFileURL(entry).href)
  const app = buildApp({ logger: false })
  await app.listen({ port: 0, host: '127.0.0.1' })
  out.s3 = `http://127.0.0.1:${app.server.address().port}`
  stops.push(() => app.close())
}

if (!only || only === 'gcs') {
  // The emulator writes blobs under $TMPDIR/firebase and leaves them: give it a private dir.
  const tmp = mkdtempSync(path.join(tmpdir(), 'taskpoint-gcs-'))
  process.env.TMPDIR = tmp
  const req = createRequire(path.join(here, 'gcs', 'package.json'))
  let fb
  try {
    fb = req.resolve('firebase-tools/package.json')
  } catch {
    missing('GCS emulator')
  }
  const lib = path.join(path.dirname(fb), 'lib', 'emulator')
  const { StorageEmulator } = req(path.join(lib, 'storage', 'index.js'))
  const { createApp } = req(path.join(lib, 'storage', 'server.js'))
  const { EmulatorRegistry } = req(path.join(lib, 'registry.js'))
  const projectId = 'taskpoint-test'
  const emu = new StorageEmulator({ projectId, host: '127.0.0.1', port: 0, rules: { name: 'none', content: '' } })
  const app = await createApp(projectId, emu)
  const server = await new Promise((resolve, reject) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s))
    s.on('error', reject)
  })
  const port = server.address().port
  emu.args.port = port
  EmulatorRegistry.set('storage', emu)
  out.gcs = `http://127.0.0.1:${port}`
  stops.push(async () => {
    server.closeAllConnections?.()
    await new Promise((r) => server.close(r))
    rmSync(tmp, { recursive: true, force: true })
  })
}

process.stdout.write(`${JSON.stringify(out)}\n`)

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  for (const s of stops) await s().catch(() => {})
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
process.stdin.on('end', stop)
process.stdin.on('close', stop)
process.stdin.resume()
