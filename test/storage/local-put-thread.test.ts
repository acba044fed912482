// The local file thread (src/storage/local-put-thread.ts): puts of bodies in shared memory, and of
// small ones, run in a worker thread as one message each. Everything here runs on the real file
// system and checks that the thread keeps every guarantee of the calling thread's path: the exact
// bytes and mode, create-if-absent and its retries, typed errors, no temp file left, no early exit.
import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { LocalStorage } from '../../src/storage/index.js'
import { failure, tempFiles } from '../helpers/common.js'
import { LocalPutThread, WORKER_SOURCE } from '../../src/storage/local-put-thread.js'
import { TEMP_MARK } from '../../src/storage/keys.js'

const base = mkdtempSync(path.join(tmpdir(), 'taskpoint-filethread-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))
const fresh = (): string => mkdtempSync(path.join(base, 'r-'))

/** `n` random bytes in shared memory, as a background commit's chunks are. */
function shared(n: number): Uint8Array {
  const b = new Uint8Array(new SharedArrayBuffer(n))
  b.set(randomBytes(n))
  return b
}

/** A storage whose puts go through `thread` (a misbehaving one, in some tests). */
function withThread(root: string, thread: LocalPutThread): LocalStorage {
  const s = new LocalStorage(root, { retry: { retries: 2, minTimeoutMs: 1 } })
  ;(s as { thread: LocalPutThread | undefined }).thread = thread
  return s
}

describe.each([
  ['the file thread', true],
  ['the calling thread', false],
] as const)('local puts from %s', (_name, fileThread) => {
  const open = (root = fresh()): LocalStorage => new LocalStorage(root, { fileThread, retry: { retries: 1, minTimeoutMs: 1 } })
  const carried = (s: LocalStorage): number => s.thread?.done ?? 0

  it('store the exact bytes with mode 0644 at every size a commit sends, and report the tag head() reads', async () => {
    const s = open()
    const bodies: [string, Uint8Array][] = [
      ['empty', new Uint8Array(0)],
      ['small', randomBytes(1000)],
      ['shared-4m', shared(4 << 20)],
      // A view into a larger ordinary buffer: only its own bytes may be stored.
      ['view', Buffer.from(randomBytes(300_000)).subarray(1000, 201_000)],
      ['large-ordinary', randomBytes(2 << 20)],
    ]
    for (const [key, body] of bodies) {
      const info = await s.put(`d/${key}`, body)
      const file = path.join(s.root, 'd', key)
      expect(Buffer.compare(readFileSync(file), Buffer.from(body.buffer, body.byteOffset, body.byteLength))).toBe(0)
      expect(statSync(file).mode & 0o777).toBe(0o644)
      expect(info).toEqual(await s.head(`d/${key}`))
      expect(info.size).toBe(body.byteLength)
    }
    // Shared memory, and ordinary bodies up to 256 KiB, go through the thread; a large ordinary body does not.
    expect(carried(s)).toBe(fileThread ? 4 : 0)
    expect(tempFiles(s.root)).toEqual([])
  })

  it('create-if-absent of an existing key is AlreadyExists and leaves the object as it was', async () => {
    const s = open()
    await s.put('m/1', shared(1000), { ifAbsent: true })
    const before = readFileSync(path.join(s.root, 'm', '1'))
    const e = await failure(s.put('m/1', shared(1000), { ifAbsent: true }))
    expect(e.code).toBe('AlreadyExists')
    expect(Buffer.compare(readFileSync(path.join(s.root, 'm', '1')), before)).toBe(0)
    expect(tempFiles(s.root)).toEqual([])
  })

  it('names the file system cannot hold are InvalidKey with the same message either way, and leave no temp file', async () => {
    const s = open()
    expect((await failure(s.put(`x/${'n'.repeat(300)}`, shared(10)))).code).toBe('InvalidKey')
    await s.put('a/b', shared(10))
    const e = await failure(s.put('a', shared(10)))
    expect(e.code).toBe('InvalidKey')
    expect(e.message).toMatch(/directory/)
    // The other way round: a key under an object. Not NotFound, not AlreadyExists (create-if-absent
    // was never asked), and the object stays as it was.
    for (const key of ['a/b/c', 'a/b/c/d/e']) {
      const under = await failure(s.put(key, shared(10)))
      expect(under.code).toBe('InvalidKey')
      expect(under.message).toMatch(/"a" and "a\/b" cannot both exist/)
    }
    expect((await s.get('a/b')).byteLength).toBe(10)
    expect(tempFiles(s.root)).toEqual([])
    if (fileThread) expect(carried(s)).toBeGreaterThan(0)
  })

  it('a root that is a file, or lies under one, is InvalidConfig naming the root, not a bad key (found by a review)', async () => {
    for (const where of ['is', 'under'] as const) {
      const file = path.join(fresh(), 'file')
      writeFileSync(file, 'x')
      const root = where === 'is' ? file : path.join(file, 'root')
      const e = await failure(open(root).put('chunks/ab/k', shared(4)))
      expect(e.code, where).toBe('InvalidConfig')
      expect(e.message).toContain(`the storage root ${root} is not a directory`)
      expect(readFileSync(file, 'utf8')).toBe('x')
    }
  })

  it('list: the same keys, order, sizes and tags from either path, temp files and other prefixes left out', async () => {
    const s = open()
    const keys = ['a', 'ab/x', 'ab/y/z', 'ab/y/zz', 'b/1', 'b/2', 'b/10', 'manifests/0001/a', 'manifests/0002/b', 'manifests/0002/c']
    for (const k of keys) await s.put(k, shared(k.length))
    // A killed writer's temp file and an empty directory: never listed.
    writeFileSync(path.join(s.root, 'b', `3${TEMP_MARK}x`), 'partial')
    mkdirSync(path.join(s.root, 'empty'))
    const before = carried(s)
    const list = async (prefix?: string, startAfter?: string): Promise<string[]> => {
      const out: string[] = []
      for await (const o of s.list(prefix, startAfter ? { startAfter } : {})) {
        expect(o.size).toBe(o.key.length)
        expect(o).toEqual(await s.head(o.key))
        out.push(o.key)
      }
      return out
    }
    expect(await list()).toEqual([...keys].sort())
    expect(await list('a')).toEqual(['a', 'ab/x', 'ab/y/z', 'ab/y/zz'])
    expect(await list('ab/y/z')).toEqual(['ab/y/z', 'ab/y/zz'])
    expect(await list('b/')).toEqual(['b/1', 'b/10', 'b/2'])
    expect(await list('manifests/', 'manifests/0002/b')).toEqual(['manifests/0002/c'])
    expect(await list('manifests/', 'manifests/0001')).toEqual(['manifests/0001/a', 'manifests/0002/b', 'manifests/0002/c'])
    expect(await list('nothing/')).toEqual([])
    expect(carried(s) - before).toBe(fileThread ? 7 : 0)
  })

  it('a directory removed since the storage made it (a prune beside us) is made again', async () => {
    const s = open()
    await s.put('chunks/ab/1', shared(100))
    rmSync(path.join(s.root, 'chunks'), { recursive: true })
    await s.put('chunks/ab/2', shared(100))
    expect(readFileSync(path.join(s.root, 'chunks', 'ab', '2')).byteLength).toBe(100)
  })

  it('batch puts then sync(): a directory deleted meanwhile is skipped, the others are synced', async () => {
    const s = open()
    await s.put('b/x/1', shared(10), { batch: true })
    await s.put('b/y/1', shared(10), { batch: true })
    rmSync(path.join(s.root, 'b', 'y'), { recursive: true })
    await s.sync()
    expect(readFileSync(path.join(s.root, 'b', 'x', '1')).byteLength).toBe(10)
  })

  // A real full file system: a small tmpfs (needs root to mount; named skip otherwise).
  const tiny = path.join(base, `tiny-${fileThread}`)
  const mounted = (() => {
    try {
      execFileSync('mkdir', ['-p', tiny])
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', tiny], { stdio: 'ignore' })
      return true
    } catch {
      return false
    }
  })()
  afterAll(() => {
    if (mounted) execFileSync('umount', [tiny])
  })
  it.skipIf(!mounted)(`a full disk is a NoSpace error, leaves no temp file, and the storage stays usable${mounted ? '' : ' [skipped: cannot mount a tmpfs here]'}`, async () => {
    const s = open(path.join(tiny, 'store'))
    const e = await failure(s.put('big', shared(1 << 20)))
    expect(e.code).toBe('NoSpace')
    expect(e.message).toContain('big')
    expect(tempFiles(path.join(tiny, 'store'))).toEqual([])
    await s.put('small', shared(4))
    expect(readFileSync(path.join(tiny, 'store', 'small')).byteLength).toBe(4)
  })
})

describe('the file thread failing', () => {
  it('a listing starts no thread: a reader lists on the calling thread, a writer in the threads it started', async () => {
    const thread = new LocalPutThread()
    const s = withThread(fresh(), thread)
    for await (const _ of s.list('x/')) expect.unreachable()
    expect(thread.running).toBe(false)
    // Started but not yet up: a listing would wait for it to boot, so it runs here.
    s.prepareWrites()
    thread.takes()
    expect(thread.running).toBe(false)
    for await (const _ of s.list('x/')) expect.unreachable()
    expect(thread.done).toBe(0)
    await s.put('y', shared(1))
    expect(thread.running).toBe(true)
    for await (const _ of s.list('x/')) expect.unreachable()
    expect(thread.done).toBe(2)
    await thread.close()
  })

  it('a listing whose code fails in the thread (no errno: a rewritten source) runs on the calling thread instead, and a file-system error stays typed', async () => {
    const root = fresh()
    const writer = new LocalStorage(root, { fileThread: false })
    for (const k of ['l/a', 'l/b/c']) await writer.put(k, shared(3))
    const broken = WORKER_SOURCE.replace('const listStep = ', 'const listStep = () => { throw new TypeError("listStep is not a function") }\nconst original = ')
    expect(broken).not.toBe(WORKER_SOURCE)
    const thread = new LocalPutThread(broken)
    const s = withThread(root, thread)
    await s.put('started', shared(1))
    const keys: string[] = []
    for await (const o of s.list('l/')) keys.push(o.key)
    expect(keys).toEqual(['l/a', 'l/b/c'])
    expect(thread.stopped).toBe(false)
    // An errno from the thread is the file system's answer, typed as from the calling thread.
    const unreadable = new LocalPutThread(
      WORKER_SOURCE.replace('const out = []', "const out = []; throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES', syscall: 'scandir' })"),
    )
    const t = withThread(root, unreadable)
    await t.put('started', shared(1))
    const e = await failure(
      (async () => {
        for await (const _ of t.list('l/')) {
        }
      })(),
    )
    expect(e.code).toBe('AccessDenied')
    await thread.close()
    await unreadable.close()
  })

  it('a thread that dies in a listing: the listing is retried on the calling thread and complete', async () => {
    const root = fresh()
    const writer = new LocalStorage(root, { fileThread: false })
    for (const k of ['l/a', 'l/b/c', 'l/d']) await writer.put(k, shared(3))
    const dies = WORKER_SOURCE.replace('const out = []', 'process.exit(5)')
    expect(dies).not.toBe(WORKER_SOURCE)
    const thread = new LocalPutThread(dies)
    const s = withThread(root, thread)
    await s.put('started', shared(1)) // a writer's: its listings go to the thread
    const keys: string[] = []
    for await (const o of s.list('l/')) keys.push(o.key)
    expect(keys).toEqual(['l/a', 'l/b/c', 'l/d'])
    expect(thread.stopped).toBe(true)
  })

  it('a thread that dies after linking a create-if-absent, before it answers: the retry knows the object for its own, not AlreadyExists', async () => {
    const dies = WORKER_SOURCE.replace('try { fs.unlinkSync(m.tmp) } catch {}', 'process.exit(3)')
    expect(dies).not.toBe(WORKER_SOURCE)
    const thread = new LocalPutThread(dies)
    const s = withThread(fresh(), thread)
    const body = shared(5000)
    const info = await s.put('manifests/1', body, { ifAbsent: true })
    expect(thread.stopped).toBe(true)
    expect(info.size).toBe(5000)
    expect(Buffer.compare(readFileSync(path.join(s.root, 'manifests', '1')), Buffer.from(body))).toBe(0)
    // Someone else's object at a key is still a conflict on the calling thread's path.
    expect((await failure(s.put('manifests/1', shared(10), { ifAbsent: true }))).code).toBe('AlreadyExists')
  })

  it('a thread that dies before writing fails only that attempt: the put is retried on the calling thread, and later puts stay there', async () => {
    const thread = new LocalPutThread(WORKER_SOURCE.replace("let stage = 'open'", 'process.exit(4)'))
    const s = withThread(fresh(), thread)
    const body = shared(3000)
    await s.put('k', body)
    expect(Buffer.compare(readFileSync(path.join(s.root, 'k')), Buffer.from(body))).toBe(0)
    expect(thread.stopped).toBe(true)
    expect(thread.takes(shared(1))).toBe(false)
    await s.put('k2', shared(10))
    expect(thread.done).toBe(0)
    expect(tempFiles(s.root)).toEqual([])
  })

  it('a prune that removes the directory right before the file is created in it: made again in the thread, the put succeeds', async () => {
    const open = 'fd = fs.openSync(m.tmp, O_WRONLY | O_CREAT | O_EXCL, 0o644)'
    const pruned = WORKER_SOURCE.replace(open, `if (i < 3) fs.rmSync(path.dirname(m.tmp), { recursive: true, force: true }); ${open}`)
    expect(pruned).not.toBe(WORKER_SOURCE)
    const thread = new LocalPutThread(pruned)
    const s = withThread(fresh(), thread)
    const body = shared(777)
    await s.put('chunks/cd/1', body)
    expect(Buffer.compare(readFileSync(path.join(s.root, 'chunks', 'cd', '1')), Buffer.from(body))).toBe(0)
    expect(thread.done).toBe(1)
    await thread.close()
  })

  it('holds the process open while it writes, and not once idle (needs npm run build)', () => {
    const entry = path.resolve('dist/src/storage/local.js')
    const root = fresh()
    // No close(): the process must still wait for the put, then exit on its own.
    const script = `const { LocalStorage } = await import(${JSON.stringify(entry)})
const s = new LocalStorage(${JSON.stringify(root)})
const body = new Uint8Array(new SharedArrayBuffer(4 << 20)).fill(7)
s.put('k', body).then(async () => {
  const back = await s.get('k')
  console.log('stored', back.length, back[12345], s.thread.done)
})`
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000, encoding: 'utf8' })
    expect(r.stdout.trim()).toBe(`stored ${4 << 20} 7 1`)
    expect(r.status).toBe(0)
  })
})
