// Hostile review of on-storage format 2 (BLAKE3 chunk ids). Each test here failed on the commit
// that introduced format 2 (05961a3) for the reason its name gives. Child processes run the built
// package (npm run build first).
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { collectGarbage, verifyCheckpoints } from '../../src/admin.js'
import { encodeManifest, manifestKey, type Manifest } from '../../src/format/manifest.js'
import { Checkpointer } from '../../src/index.js'
import { allBackends, closeEnforcingProxies, type Backend } from '../helpers/backends.js'
import { quiet, sha } from '../helpers/common.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const ENTRY = path.join(here, '..', '..', 'dist', 'src', 'index.js')
const ADMIN = path.join(here, '..', '..', 'dist', 'src', 'admin.js')

/** Bytes large enough (> 256 KiB, one chunk) that their verification runs on a hashing worker thread. */
function big(seed: number): Uint8Array {
  const b = new Uint8Array(300_000)
  for (let i = 0; i < b.byteLength; i++) b[i] = (i * 31 + seed) & 255
  return b
}

/** Runs an ESM script in a child node with `flags`; returns what it printed as JSON on its last line. */
function child(flags: string[], script: string, env: Record<string, string>): unknown {
  const out = execFileSync(process.execPath, [...flags, '--input-type=module', '-e', script], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  return JSON.parse(out.trim().split('\n').at(-1)!)
}

/** A child that opens `uri`, reads its newest checkpoint, verifies it, and reports the outcome. */
const readScript = (uri: string): string => `
  const { Checkpointer } = await import(${JSON.stringify(ENTRY)})
  const { verifyCheckpoints } = await import(${JSON.stringify(ADMIN)})
  const { createHash } = await import('node:crypto')
  const cp = await Checkpointer.open(${JSON.stringify(uri)}, { repro: false, onWarning() {} })
  const out = {}
  try {
    const b = await cp.read()
    out.read = b ? createHash('sha256').update(b).digest('hex') : null
    out.skipped = cp.lastSkipped.map((s) => s.id)
    out.verify = (await verifyCheckpoints(cp.storage)).map((r) => r.problems)
  } catch (e) {
    out.error = String(e.code ?? e.name) + ': ' + e.message
  }
  await cp.close()
  console.log(JSON.stringify(out))
`

/** A child that writes `big(seed)` to `uri` as step `step` and reports its chunk keys. */
const writeScript = (uri: string, seed: number, step = 1): string => `
  const { Checkpointer } = await import(${JSON.stringify(ENTRY)})
  const b = new Uint8Array(300000)
  for (let i = 0; i < b.byteLength; i++) b[i] = (i * 31 + ${seed}) & 255
  const cp = await Checkpointer.open(${JSON.stringify(uri)}, { repro: false, onWarning() {} })
  await cp.write(b, { step: ${step} })
  const keys = []
  for await (const o of cp.storage.list('chunks/')) keys.push(o.key)
  await cp.close()
  console.log(JSON.stringify(keys))
`

/** Preloaded with -r: the native BLAKE3 module fails to load, as on a platform without a prebuilt binary. */
const NO_BLAKE3 = path.join(mkdtempSync(path.join(tmpdir(), 'tp-noblake3-')), 'no-blake3.cjs')
writeFileSync(
  NO_BLAKE3,
  `const M = require('node:module'); const load = M._load; M._load = function (req, ...rest) { if (String(req).includes('blake-hash')) throw new Error('no native binary here'); return load.call(this, req, ...rest) }`,
)

afterAll(closeEnforcingProxies)

describe.each(allBackends().map((b) => [b.name, b] as const))('format 2 review on %s', (_n, backend: Backend) => {
  it('a process started with ordinary node flags (--max-old-space-size, --expose-gc) can read its checkpoints: hashing workers are not handed flags a worker refuses', async () => {
    const { uri, env } = await backend.freshUri()
    const data = big(1)
    child([], writeScript(uri, 1), env)
    for (const flag of ['--max-old-space-size=4096', '--expose-gc']) {
      // The previous release (2de76f7) read this fine: its workers inherited the parent's flags.
      expect(child([flag], readScript(uri), env), flag).toEqual({ read: sha(data), skipped: [], verify: [[]] })
    }
  })

  it('TASKPOINT_HASH=sha256 only names new chunks: a process with it set still reads and verifies BLAKE3 checkpoints', async () => {
    const { uri, env } = await backend.freshUri()
    const data = big(2)
    const keys = child([], writeScript(uri, 2), env) as string[]
    expect(keys.length).toBe(1)
    expect(keys[0]!.split('/').at(-1)!.startsWith('b3-')).toBe(true)
    // README: "with TASKPOINT_HASH=sha256, new chunks are named by their bare sha256 ... every reader of
    // this version verifies both kinds". Setting it must not make a location written with BLAKE3 unreadable.
    expect(child([], readScript(uri), { ...env, TASKPOINT_HASH: 'sha256' })).toEqual({ read: sha(data), skipped: [], verify: [[]] })
  })

  it('where the native module cannot load, a BLAKE3 checkpoint is an error (no fallback to an older sha256 one, prune deletes nothing) and its chunks in a shared chunk cache are left alone', async () => {
    const { uri, env } = await backend.freshUri()
    child([], writeScript(uri, 6, 1), { ...env, TASKPOINT_HASH: 'sha256' }) // step 1: sha256 ids
    child([], writeScript(uri, 7, 2), env) // step 2: BLAKE3 ids
    const cacheDir = mkdtempSync(path.join(tmpdir(), 'tp-cache-'))
    const readCached = `
      const { Checkpointer } = await import(${JSON.stringify(ENTRY)})
      const cp = await Checkpointer.open(${JSON.stringify(uri)}, { repro: false, onWarning() {}, chunkCache: { dir: ${JSON.stringify(cacheDir)} } })
      const out = {}
      try { out.step = (await cp.latest()).step; out.len = (await cp.read()).byteLength; out.skipped = cp.lastSkipped.length } catch (e) { out.error = String(e.code ?? e.name) }
      await cp.close()
      console.log(JSON.stringify(out))
    `
    // A process with the module fills the host's cache with the BLAKE3 chunk.
    expect(child([], readCached, env)).toEqual({ step: 2, len: 300_000, skipped: 0 })
    const cachedFiles = (): string[] =>
      readdirSync(cacheDir, { recursive: true, withFileTypes: true })
        .filter((d) => d.isFile())
        .map((d) => d.name)
    expect(cachedFiles().filter((n) => n.startsWith('b3-')).length).toBe(1)
    // One without it: an error, not step 1, and the cached chunk it could not check is not thrown away.
    expect(child(['-r', NO_BLAKE3], readCached, env)).toEqual({ step: 2, error: 'UnsupportedFormat' })
    expect(child(['-r', NO_BLAKE3], readScript(uri), env)).toMatchObject({ error: expect.stringMatching(/^UnsupportedFormat/) })
    const cli = path.join(here, '..', '..', 'dist', 'src', 'cli', 'main.js')
    let pruned = ''
    try {
      pruned = execFileSync(process.execPath, ['-r', NO_BLAKE3, cli, 'prune', uri, '--keep-last', '1', '--min-age', '0s'], {
        env: { ...process.env, ...env },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      })
    } catch (e) {
      pruned = `exit ${(e as { status: number }).status}`
    }
    expect(pruned).toBe('exit 1')
    expect(child([], readScript(uri), env)).toMatchObject({ read: sha(big(7)) })
    expect(cachedFiles().filter((n) => n.startsWith('b3-')).length).toBe(1)
  })

  it('a flipped bit in the format digit of a manifest header (TPM2 -> TPM3) is damage: readers fall back, gc is blocked, verify reports it', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, quiet)
    const one = big(3)
    await cp.write(one, { step: 1 })
    const two = await cp.write(big(4), { step: 2 })
    const bytes = Buffer.from(await s.get(two.id))
    expect(bytes.subarray(0, 4).toString()).toBe('TPM2')
    bytes[3] = bytes[3]! ^ 0x01 // '2' (0x32) -> '3' (0x33): one bit; the body (and its checksum) still says format 2
    await s.put(two.id, bytes)
    const reader = await Checkpointer.open(s, quiet)
    expect(sha((await reader.read())!)).toBe(sha(one))
    expect(reader.lastSkipped.map((x) => x.id)).toEqual([two.id])
    const g = await collectGarbage(s, { minAgeMs: 0 })
    expect(g.deletedChunks).toBe(0)
    expect(g.blockedBy.map((b) => b.split(' ')[0])).toEqual([two.id])
    const report = await verifyCheckpoints(s)
    expect(report.map((r) => r.id)).toEqual([two.id])
    expect(report[0]!.problems.length).toBe(1)
    await reader.close()
    await cp.close()
  })

  it('a manifest that really is of a newer format (header and intact body agree) is still refused with UnsupportedFormat, not skipped', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, quiet)
    const one = await cp.write(big(5), { step: 1 })
    const raw = Buffer.from(await s.get(one.id))
    const m = JSON.parse(raw.subarray(raw.indexOf(10) + 1).toString()) as Manifest
    const newer: Manifest = { ...m, format: 3, seq: m.seq + 1, step: 2 }
    const key = manifestKey(newer)
    await s.put(key, encodeManifest(newer))
    const reader = await Checkpointer.open(s, quiet)
    await expect(reader.read()).rejects.toMatchObject({ code: 'UnsupportedFormat' })
    await expect(collectGarbage(s, { minAgeMs: 0 })).rejects.toMatchObject({ code: 'UnsupportedFormat' })
    await reader.close()
    await cp.close()
  })
})
