// Hostile review of packs, staged restore and the files walk. Each test here failed on main at
// 7ba5103 for the reason its name gives.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { verifyCheckpoints } from '../../src/admin.js'
import { fileEntries } from '../../src/checkpoint/files.js'
import { Checkpointer } from '../../src/index.js'
import { localBackend } from '../helpers/backends.js'
import { KiB, collectorStrikesDuringManifest, quiet } from '../helpers/common.js'

const tmp = (p: string): string => fs.mkdtempSync(path.join(tmpdir(), `tp-rp-${p}-`))
const cleanups: (() => void)[] = []
afterAll(() => {
  for (const c of cleanups) c()
})

describe('packs/restore review (local file system)', () => {
  it('a restore never deletes anything outside its target: the sweep of dead restores does not follow a symlink out of it', async () => {
    const storage = await localBackend().open()
    const cp = await Checkpointer.open(storage, quiet)
    const src = tmp('src')
    fs.mkdirSync(path.join(src, 'd'))
    fs.writeFileSync(path.join(src, 'd', 'x'), 'new')
    await cp.save(src, { step: 1 })

    // Somewhere else entirely: a directory the restore has no business in, holding what looks like
    // a dead restore's staging directory (another target's leftover, or simply a user's folder).
    const outside = tmp('outside')
    const foreign = path.join(outside, '.tp-restore-99999999-deadbeef')
    fs.mkdirSync(foreign)
    fs.writeFileSync(path.join(foreign, 'precious'), 'keep me')

    const target = tmp('target')
    fs.symlinkSync(outside, path.join(target, 'd'))
    // The link is in the way of the checkpoint's directory: the restore is refused...
    await expect(cp.restore(target)).rejects.toMatchObject({ code: 'RestoreConflict' })
    // ...and must have touched nothing, least of all outside the target.
    expect(fs.readFileSync(path.join(foreign, 'precious'), 'utf8')).toBe('keep me')
    await cp.close()
  })

  it('a file replaced by a FIFO after the walk does not hang the save (large file: read through the thread pool)', async () => {
    const dir = tmp('fifo')
    const f = path.join(dir, 'big.bin')
    fs.writeFileSync(f, randomBytes(64 * 1024))
    const { entries, closeAll } = await fileEntries(dir, () => {})
    fs.rmSync(f)
    execFileSync('mkfifo', [f])
    // Whatever happens, unblock a reader stuck in open() so the thread pool is given back.
    cleanups.push(() => fs.closeSync(fs.openSync(f, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)))
    const src = entries[0]!.source as (buf: Uint8Array, offset: number) => Promise<number>
    const outcome = await Promise.race([
      src(new Uint8Array(64 * 1024), 0).then(
        (n) => `read ${n} bytes`,
        (e: unknown) => `error: ${(e as Error).message}`,
      ),
      new Promise<string>((r) => setTimeout(() => r('hung'), 3000)),
    ])
    await closeAll().catch(() => {})
    expect(outcome).toMatch(/^error: .*not a regular file/)
  })

  it('a small file replaced by a FIFO after the walk is refused with a clear error before it is opened (without a writer, the synchronous open blocks the event loop forever)', async () => {
    const dir = tmp('fifo2')
    const f = path.join(dir, 'small.txt')
    fs.writeFileSync(f, 'twelve bytes')
    const { entries } = await fileEntries(dir, () => {})
    fs.rmSync(f)
    execFileSync('mkfifo', [f])
    // A writer with 12 bytes in the pipe, so the old code returns instead of blocking this test forever.
    const w = fs.openSync(f, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
    cleanups.push(() => fs.closeSync(w))
    fs.writeSync(w, 'PIPE CONTENT')
    expect(() => entries[0]!.readAll!(new Uint8Array(12))).toThrow(/not a regular file/)
  })

  it('a file replaced by a symlink after the walk is not followed: a save never stores bytes from outside its tree', async () => {
    const secret = path.join(tmp('secret'), 'secret')
    fs.writeFileSync(secret, 'TOP SECRET!!')
    const dir = tmp('swap')
    const f = path.join(dir, 'small.txt')
    fs.writeFileSync(f, 'twelve bytes')
    const { entries } = await fileEntries(dir, () => {})
    fs.rmSync(f)
    fs.symlinkSync(secret, f)
    const buf = new Uint8Array(12)
    let err: unknown
    try {
      entries[0]!.readAll!(buf)
    } catch (e) {
      err = e
    }
    expect(Buffer.from(buf).toString()).not.toBe('TOP SECRET!!')
    expect(err).toBeDefined()
  })

  it('a lock lost while the manifest went out and a file deleted or truncated meanwhile: the commit is undone (LockLost), not left behind naming chunks that are gone', async () => {
    for (const change of ['delete', 'truncate'] as const) {
      const s = await localBackend().open()
      const src = tmp('lost')
      fs.writeFileSync(path.join(src, 'big.bin'), randomBytes(40 * KiB))
      fs.writeFileSync(path.join(src, 'small.txt'), 'v1')
      const cp0 = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
      const first = await cp0.save(src, { step: 1 })
      await cp0.close()
      // As in trust.test.ts: a collector takes the writer for dead while its manifest goes out.
      const { storage: spy, struck } = collectorStrikesDuringManifest(s, first.id, () => {
        if (change === 'delete') fs.rmSync(path.join(src, 'big.bin'))
        else fs.truncateSync(path.join(src, 'big.bin'), 10)
      })
      const cp = await Checkpointer.open(spy, { chunkSize: 16 * KiB, ...quiet })
      const err = await cp.save(src, { step: 2 }).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(struck()).toBe(true)
      // Whatever the error, no manifest may stay that names chunks that are not stored.
      const left = (await verifyCheckpoints(s)).filter((r) => r.problems.length > 0).map((r) => [r.id, r.problems])
      expect(left, change).toEqual([])
      expect(err, change).toMatchObject({ code: 'LockLost' })
      await cp.close().catch(() => {})
    }
  })

  it('a restore that fails while moving into place (here an immutable file; EACCES for a non-root user) leaves the target as it was', async () => {
    const storage = await localBackend().open()
    const cp = await Checkpointer.open(storage, quiet)
    const src = tmp('src2')
    fs.writeFileSync(path.join(src, 'a.txt'), 'new a')
    fs.writeFileSync(path.join(src, 'z.txt'), 'new z')
    await cp.save(src, { step: 1 })
    const target = tmp('target2')
    fs.writeFileSync(path.join(target, 'a.txt'), 'old a')
    fs.writeFileSync(path.join(target, 'z.txt'), 'old z')
    execFileSync('chattr', ['+i', path.join(target, 'z.txt')])
    cleanups.push(() => execFileSync('chattr', ['-i', path.join(target, 'z.txt')]))
    await expect(cp.restore(target)).rejects.toThrow()
    expect(fs.readdirSync(target).sort()).toEqual(['a.txt', 'z.txt'])
    expect(fs.readFileSync(path.join(target, 'a.txt'), 'utf8')).toBe('old a')
    await cp.close()
  })

  it('a failed restore into a directory it had to create (with parents) takes away every directory it created', async () => {
    const storage = await localBackend().open()
    const cp = await Checkpointer.open(storage, { chunkSize: 16 * KiB, ...quiet })
    const src = tmp('src3')
    fs.writeFileSync(path.join(src, 'big.bin'), randomBytes(40 * KiB))
    await cp.save(src, { step: 1 })
    for await (const o of storage.list('chunks/')) await storage.delete(o.key)
    const base = tmp('base')
    // Its only checkpoint is damaged: nothing to restore (undefined or an error, either way nothing may be left).
    await cp.restore(path.join(base, 'a', 'b', 'c')).catch(() => undefined)
    expect(fs.readdirSync(base)).toEqual([])
    await cp.close()
  })

  it('a killed restore of an earlier incarnation with the same pid (a container restarted: the job is pid 1 or 7 every time) is swept, not kept forever', async () => {
    const storage = await localBackend().open()
    const cp = await Checkpointer.open(storage, quiet)
    const src = tmp('src4')
    fs.writeFileSync(path.join(src, 'w.bin'), randomBytes(1000))
    await cp.save(src, { step: 1 })
    const target = tmp('target4')
    // What the previous run of this job (same pid in a fresh pid namespace) left when it was killed.
    const left = path.join(target, `.tp-restore-${process.pid}-0d0d0d0d`)
    fs.mkdirSync(left)
    fs.writeFileSync(path.join(left, 'w.bin'), randomBytes(100_000))
    await cp.restore(target)
    expect(fs.readdirSync(target)).toEqual(['w.bin'])
    // Restores of this process that are in flight are left alone (two at once into one target).
    const other = tmp('src5')
    fs.writeFileSync(path.join(other, 'v.bin'), randomBytes(1000))
    const cp2 = await Checkpointer.open(await localBackend().open(), quiet)
    await cp2.save(other, { step: 1 })
    await Promise.all([cp.restore(target), cp2.restore(target)])
    expect(fs.readdirSync(target).sort()).toEqual(['v.bin', 'w.bin'])
    await cp.close()
    await cp2.close()
  })
})
