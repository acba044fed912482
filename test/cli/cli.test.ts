import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, promises as fs } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { Checkpointer, openStorage } from '../../src/index.js'
import { allBackends, type Backend } from '../helpers/backends.js'
import { chunkKeyOf } from '../helpers/common.js'

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'src', 'cli', 'main.js')
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

interface Out {
  code: number | null
  stdout: string
  stderr: string
  raw: Buffer
}

function taskpoint(args: string[], env: Record<string, string | undefined> = {}): Promise<Out> {
  return new Promise((resolve) => {
    const merged: NodeJS.ProcessEnv = { ...process.env, AWS_EC2_METADATA_DISABLED: 'true' }
    for (const [k, v] of Object.entries(env)) {
      if (v === undefined) delete merged[k]
      else merged[k] = v
    }
    const p = spawn(process.execPath, [cli, ...args], { env: merged, stdio: ['ignore', 'pipe', 'pipe'] })
    const chunks: Buffer[] = []
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => chunks.push(d))
    p.stderr.on('data', (d) => (stderr += d))
    p.on('exit', (code) => {
      const raw = Buffer.concat(chunks)
      resolve({ code, stdout: raw.toString(), stderr, raw })
    })
  })
}

describe.each(allBackends().map((b) => [b.name, b] as const))('taskpoint CLI on %s', (_n, backend: Backend) => {
  it('ls, show, cat, restore, verify, prune and gc a real checkpoint location', async () => {
    const { uri, env } = await backend.freshUri()
    Object.assign(process.env, env)
    const cp = await Checkpointer.open(uri, { chunkSize: 8 * 1024, repro: false })
    const payloads: Buffer[] = []
    for (let step = 0; step < 4; step++) {
      const b = Buffer.alloc(40 * 1024, 7)
      b.set(randomBytes(8 * 1024), 32 * 1024) // only the last chunk changes
      payloads.push(b)
      await cp.write(b, { step: step * 100, metadata: { loss: 1 / (step + 1) } })
    }
    await cp.close()

    const ls = await taskpoint(['ls', uri, '--json'], env)
    expect(ls.code, ls.stderr).toBe(0)
    const rows = JSON.parse(ls.stdout) as { step: number; size: number; newBytes: number; metadata: { loss: number } }[]
    expect(rows.map((r) => r.step)).toEqual([0, 100, 200, 300])
    expect(rows[0]!.newBytes).toBe(16 * 1024) // one chunk of 7s (stored once) + the random one
    expect(rows[1]!.newBytes).toBe(8 * 1024)
    expect(rows[3]!.metadata.loss).toBe(0.25)
    const table = await taskpoint(['ls', uri], env)
    expect(table.stdout).toMatch(/^STEP\s+TIME \(UTC\)\s+SIZE\s+NEW/m)

    const show = await taskpoint(['show', uri, '100', '--json'], env)
    const m = JSON.parse(show.stdout) as { step: number; files: { path: string; chunks: unknown[] }[] }
    expect(m.step).toBe(100)
    expect(m.files[0]!.chunks).toHaveLength(5)

    const cat = await taskpoint(['cat', uri, '200'], env)
    expect(cat.code).toBe(0)
    expect(sha(cat.raw)).toBe(sha(payloads[2]!))

    const dir = mkdtempSync(path.join(tmpdir(), 'tp-cli-'))
    const restore = await taskpoint(['restore', uri, dir], env)
    expect(restore.code, restore.stderr).toBe(0)
    expect(sha(await fs.readFile(path.join(dir, 'data')))).toBe(sha(payloads[3]!))

    expect((await taskpoint(['verify', uri, '--all'], env)).code).toBe(0)
    // Damage the newest checkpoint's own chunk: verify names it and exits 3.
    const storage = await openStorage(uri)
    const last = JSON.parse((await taskpoint(['show', uri, '--json'], env)).stdout) as { files: { chunks: { hash: string }[] }[] }
    const victim = last.files[0]!.chunks[4]!.hash
    await storage.put(chunkKeyOf(victim), Buffer.from('garbage'))
    const bad = await taskpoint(['verify', uri], env)
    expect(bad.code).toBe(3)
    expect(bad.stdout).toMatch(/DAMAGED .* bad chunk/)
    expect(bad.stdout).toContain('data: chunk')
    // restore without a STEP falls back past the damaged newest checkpoint to the one before.
    const dir2 = mkdtempSync(path.join(tmpdir(), 'tp-cli-'))
    const r2 = await taskpoint(['restore', uri, dir2], env)
    expect(r2.stdout).toContain('restored step 200')
    expect(r2.stderr).toMatch(/skipping damaged checkpoint/)

    const dry = await taskpoint(['prune', uri, '--keep-last', '2', '--dry-run'], env)
    expect(dry.stdout).toContain('would delete 2 checkpoint(s)')
    const pr = await taskpoint(['prune', uri, '--keep-last', '1', '--keep-every', '200', '--min-age', '0s'], env)
    expect(pr.code, pr.stderr).toBe(0)
    const after = JSON.parse((await taskpoint(['ls', uri, '--json'], env)).stdout) as { step: number }[]
    expect(after.map((r) => r.step)).toEqual([0, 200, 300])
    const g = await taskpoint(['gc', uri, '--min-age', '0'], env)
    expect(g.code).toBe(0)
    expect(g.stdout).toMatch(/deleted \d+ unreferenced chunk/)
    await storage.close()
  }, 120_000)
})

describe('taskpoint CLI errors', () => {
  it('--help for every command, usage errors exit 2', async () => {
    for (const c of ['ls', 'show', 'verify', 'restore', 'cat', 'prune', 'gc', 'run']) {
      const r = await taskpoint([c, '--help'])
      expect(r.code, c).toBe(0)
      expect(r.stdout, c).toContain(`taskpoint ${c}`)
    }
    expect((await taskpoint(['frobnicate'])).code).toBe(2)
    const r = await taskpoint(['prune', '/tmp/x'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('--keep-last N is required')
  })

  it('a wrong URI, a non-checkpoint prefix, an empty one', async () => {
    const bad = await taskpoint(['ls', 'ftp://x/y'])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/unsupported URI scheme "ftp:\/\/"/)
    const dir = mkdtempSync(path.join(tmpdir(), 'tp-notcp-'))
    await fs.writeFile(path.join(dir, 'model.bin'), 'x')
    const r = await taskpoint(['ls', dir])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/holds objects \(e\.g\. "model\.bin"\) but no taskpoint checkpoints/)
    const empty = await taskpoint(['verify', mkdtempSync(path.join(tmpdir(), 'tp-empty-'))])
    expect(empty.code).toBe(1)
    expect(empty.stderr).toMatch(/no checkpoints at/)
  })

  it('missing S3 credentials and an unreachable endpoint say so', async () => {
    const home = mkdtempSync(path.join(tmpdir(), 'tp-home-'))
    const noCreds = await taskpoint(['ls', 's3://bucket/run'], {
      AWS_ACCESS_KEY_ID: undefined,
      AWS_SECRET_ACCESS_KEY: undefined,
      AWS_PROFILE: undefined,
      AWS_SESSION_TOKEN: undefined,
      AWS_WEB_IDENTITY_TOKEN_FILE: undefined,
      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: undefined,
      AWS_CONTAINER_CREDENTIALS_FULL_URI: undefined,
      HOME: home,
      AWS_CONFIG_FILE: path.join(home, 'none'),
      AWS_SHARED_CREDENTIALS_FILE: path.join(home, 'none'),
      AWS_ENDPOINT_URL: 'http://127.0.0.1:9',
      AWS_REGION: 'us-east-1',
    })
    expect(noCreds.code).toBe(1)
    expect(noCreds.stderr).toMatch(/no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \(or AWS_PROFILE\) in the environment/)
    expect(noCreds.stderr).not.toMatch(/clientConfig|pass .* option/) // library advice means nothing at a shell
    expect(noCreds.stderr).not.toMatch(/NodeVersionSupportWarning/)
    const down = await taskpoint(['ls', 's3://bucket/run'], { AWS_ENDPOINT_URL: 'http://127.0.0.1:9', AWS_ACCESS_KEY_ID: 'a', AWS_SECRET_ACCESS_KEY: 'b', AWS_REGION: 'us-east-1' })
    expect(down.code).toBe(1)
    // Opening reads the latest-checkpoint hint first (then lists manifests): either names the operation and key.
    expect(down.stderr).toMatch(/s3 (list s3:\/\/bucket\/run\/manifests\/|get s3:\/\/bucket\/run\/hints\/latest\.json).*transient fault.*ECONNREFUSED/)
  }, 60_000)
})

describe('taskpoint CLI: what a new user runs into', () => {
  it('a misspelt flag gets a suggestion; a missing value says so', async () => {
    const typo = await taskpoint(['prune', '/tmp/x', '--keep-lst', '3'])
    expect(typo.code).toBe(2)
    expect(typo.stderr).toMatch(/^taskpoint prune: unknown option --keep-lst; did you mean --keep-last\?/)
    const other = await taskpoint(['ls', '/tmp/x', '--frobnicate'])
    expect(other.stderr).toMatch(/unknown option --frobnicate; this command takes --json/)
    const missing = await taskpoint(['prune', '/tmp/x', '--keep-last'])
    expect(missing.stderr).toMatch(/--keep-last needs a value/)
  })

  it('a missing directory or a file says so, rather than "no checkpoints"', async () => {
    const gone = path.join(mkdtempSync(path.join(tmpdir(), 'tp-gone-')), 'typo')
    const r = await taskpoint(['ls', gone])
    expect(r.code).toBe(1)
    expect(r.stderr).toBe(`taskpoint ls: ${gone} does not exist\n`)
    await expect(fs.stat(gone)).rejects.toMatchObject({ code: 'ENOENT' }) // and nothing was created
    const file = path.join(path.dirname(gone), 'f')
    await fs.writeFile(file, 'x')
    expect((await taskpoint(['verify', file])).stderr).toMatch(/is a file, not a checkpoint directory/)
  })

  it('ls of a big tree that holds no checkpoints reads only its top directory', async () => {
    // A full walk (what ls did: 14 s on /usr) reaches "a/deep/x" and names it; reading only the
    // top directory names "a". No timing involved.
    const dir = mkdtempSync(path.join(tmpdir(), 'tp-tree-'))
    await fs.mkdir(path.join(dir, 'a', 'deep'), { recursive: true })
    await fs.writeFile(path.join(dir, 'a', 'deep', 'x'), 'x')
    await fs.mkdir(path.join(dir, 'b'))
    const r = await taskpoint(['ls', dir])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/holds objects \(e\.g\. "a"\) but no taskpoint checkpoints/)
  })

  it('restore refuses a non-empty directory or a file; --clean replaces, --force overlays; a damaged checkpoint leaves DIR alone', async () => {
    const uri = mkdtempSync(path.join(tmpdir(), 'tp-cli-src-'))
    const src = mkdtempSync(path.join(tmpdir(), 'tp-cli-tree-'))
    await fs.writeFile(path.join(src, 'model.bin'), 'new model')
    await fs.mkdir(path.join(src, 'sub'))
    await fs.writeFile(path.join(src, 'sub', 'opt.bin'), 'new opt')
    const cp = await Checkpointer.open(uri, { repro: false })
    await cp.save(src, { step: 1 })
    await cp.close()
    const fresh = async (): Promise<string> => {
      const d = mkdtempSync(path.join(tmpdir(), 'tp-cli-dst-'))
      await fs.writeFile(path.join(d, 'model.bin'), 'old model')
      await fs.writeFile(path.join(d, 'stale.txt'), 'from another run')
      return d
    }
    const tree = async (d: string): Promise<Record<string, string>> => {
      const out: Record<string, string> = {}
      for (const f of (await fs.readdir(d, { recursive: true, withFileTypes: true })).filter((e) => e.isFile())) {
        out[path.relative(d, path.join(f.parentPath, f.name))] = await fs.readFile(path.join(f.parentPath, f.name), 'utf8')
      }
      return out
    }

    const d1 = await fresh()
    const refused = await taskpoint(['restore', uri, d1])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/is not empty \(2 entries, e\.g\. "model\.bin"\): restoring would mix.*--clean.*--force/)
    expect(await tree(d1)).toEqual({ 'model.bin': 'old model', 'stale.txt': 'from another run' })

    const clean = await taskpoint(['restore', uri, d1, '--clean'])
    expect(clean.code, clean.stderr).toBe(0)
    expect(await tree(d1)).toEqual({ 'model.bin': 'new model', [path.join('sub', 'opt.bin')]: 'new opt' })

    const d2 = await fresh()
    expect((await taskpoint(['restore', uri, d2, '--force'])).code).toBe(0)
    expect(await tree(d2)).toEqual({ 'model.bin': 'new model', 'stale.txt': 'from another run', [path.join('sub', 'opt.bin')]: 'new opt' })

    const file = path.join(d2, 'stale.txt')
    const onFile = await taskpoint(['restore', uri, file])
    expect(onFile.code).toBe(1)
    expect(onFile.stderr).toBe(`taskpoint restore: ${file} exists and is not a directory: restore into a directory\n`)
    expect((await taskpoint(['restore', uri, d2, '--clean', '--force'])).code).toBe(2)

    // Every chunk damaged: --clean must not have removed anything before the restore verified.
    const storage = await openStorage(uri)
    for await (const o of storage.list('chunks/')) await storage.put(o.key, Buffer.from('garbage'))
    await storage.close()
    const d3 = await fresh()
    const damaged = await taskpoint(['restore', uri, d3, '--clean'])
    expect(damaged.code).toBe(1)
    expect(await tree(d3)).toEqual({ 'model.bin': 'old model', 'stale.txt': 'from another run' })
  })

  it('restore refuses the store itself, a directory inside it, and with --clean one that holds it; nothing of the store is lost', async () => {
    const proj = mkdtempSync(path.join(tmpdir(), 'tp-cli-proj-'))
    const store = path.join(proj, 'ckpt')
    const cp = await Checkpointer.open(store, { repro: false })
    await cp.write(Buffer.from('step one'), { step: 1 })
    await cp.write(Buffer.from('step two'), { step: 2 })
    await cp.close()
    await fs.writeFile(path.join(proj, 'notes.txt'), 'mine')
    const before = (await fs.readdir(store, { recursive: true })).sort()
    for (const [dir, flag, says] of [
      [store, '--clean', /is inside the checkpoint store/],
      [store, '--force', /is inside the checkpoint store/],
      [path.join(store, 'chunks'), '--clean', /is inside the checkpoint store/],
      [proj, '--clean', /holds the checkpoint store/],
    ] as const) {
      const r = await taskpoint(['restore', store, '1', dir, flag])
      expect(r.code, `${dir} ${flag}: ${r.stderr}`).toBe(1)
      expect(r.stderr).toMatch(says)
      expect(r.stderr).not.toMatch(/\n\s+at /) // no stack trace
    }
    expect((await fs.readdir(store, { recursive: true })).sort()).toEqual(before)
    expect(await fs.readFile(path.join(proj, 'notes.txt'), 'utf8')).toBe('mine')
    const reader = await Checkpointer.open(store, { repro: false })
    expect(Buffer.from((await reader.read())!).toString()).toBe('step two')
    // The library's restore refuses the store's inside too; into the project (which holds it) it
    // only adds the checkpoint's files.
    await expect(reader.restore(path.join(store, 'out'))).rejects.toThrow(/is inside the checkpoint store/)
    expect((await reader.restore(proj))?.files).toEqual(['data'])
    await reader.close()
    // save(proj) leaves the store out (a checkpoint holding it would hold every earlier one), and a
    // checkpoint with files where the store is may not be restored over it.
    const warnings: string[] = []
    const w = await Checkpointer.open(store, { repro: false, onWarning: (m) => warnings.push(m) })
    const saved = await w.save(proj)
    expect(warnings.join('\n')).toMatch(/not saving .*ckpt: it is this checkpoint store's own directory/)
    expect((await w.restore(mkdtempSync(path.join(tmpdir(), 'tp-cli-out-'))))?.files.sort()).toEqual(['data', 'notes.txt'])
    const other = mkdtempSync(path.join(tmpdir(), 'tp-cli-other-'))
    await fs.mkdir(path.join(other, 'ckpt', 'manifests'), { recursive: true })
    await fs.writeFile(path.join(other, 'ckpt', 'manifests', 'x'), 'not a manifest')
    await w.save(other)
    await expect(w.restore(proj)).rejects.toThrow(/the checkpoint's ckpt\/manifests\/x would land in the checkpoint store/)
    await expect(w.save(store)).rejects.toThrow(/it is the checkpoint store itself/)
    expect((await w.list()).map((c) => c.id)).toContain(saved.id)
    await w.close()
  })

  it('cat ends quietly, exit 0, when the reader closes the pipe early (cat … | head)', async () => {
    const uri = mkdtempSync(path.join(tmpdir(), 'tp-cli-pipe-'))
    const cp = await Checkpointer.open(uri, { repro: false })
    await cp.write(randomBytes(8 << 20))
    await cp.close()
    const child = spawn(process.execPath, [cli, 'cat', uri], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.stdout.once('data', () => child.stdout.destroy())
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
    expect(stderr).toBe('')
    expect(code).toBe(0)
    // Any other command goes on to its own end and exit code: verify of a damaged store is still 3
    // with nobody reading (it exited 0 while an early version of this handling exited at once).
    const storage = await openStorage(uri)
    for await (const o of storage.list('chunks/')) await storage.put(o.key, Buffer.from('garbage'))
    await storage.close()
    const verify = spawn(process.execPath, [cli, 'verify', uri], { stdio: ['ignore', 'pipe', 'ignore'] })
    verify.stdout.destroy()
    expect(await new Promise<number | null>((resolve) => verify.on('close', resolve))).toBe(3)
  })

  it('restore --help describes the layout it writes', async () => {
    const r = await taskpoint(['restore', '--help'])
    expect(r.stdout).toContain('DIR/state.bin')
    expect(r.stdout).not.toMatch(/one file per array/)
  })
})

describe('progress', () => {
  it('draws a bar on a TTY only for transfers over a second, plain lines otherwise', async () => {
    const { vi } = await import('vitest')
    const { progress } = await import('../../src/cli/progress.js')
    vi.useFakeTimers()
    try {
      const tty = {
        isTTY: true,
        out: '',
        write(s: string) {
          this.out += s
          return true
        },
      }
      const quick = progress('up', 100, tty as unknown as NodeJS.WriteStream)
      quick.update(100)
      quick.finish()
      expect(tty.out).toBe('')
      const slow = progress('up', 1024 * 1024, tty as unknown as NodeJS.WriteStream)
      vi.advanceTimersByTime(1500)
      slow.update(512 * 1024)
      vi.advanceTimersByTime(500)
      slow.update(1024 * 1024)
      slow.finish()
      expect(tty.out).toMatch(/\rup \[#{12}\.{12}\] {2}50% 512\.0 KiB\/1\.0 MiB/)
      expect(tty.out.endsWith('\n')).toBe(true)
      const pipe = {
        isTTY: false,
        out: '',
        write(s: string) {
          this.out += s
          return true
        },
      }
      const p = progress('down', 2048, pipe as unknown as NodeJS.WriteStream)
      vi.advanceTimersByTime(3000)
      p.update(1024)
      p.finish()
      expect(pipe.out).toMatch(/^down: 50% \(1\.0 KiB of 2\.0 KiB, .*\/s\)\n/)
      expect(pipe.out).not.toContain('\r')
    } finally {
      vi.useRealTimers()
    }
  })
})
