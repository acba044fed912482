// Hostile review of the local file thread (991ce2e: puts of shared-memory and small bodies in a pool
// of worker threads). Each test here failed on 991ce2e for the reason its name gives; everything
// runs on the real file system (the inode test needs one that reuses freed inode numbers at once,
// as ext4 does; on tmpfs it passes without showing anything).
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { StorageError } from '../../src/index.js'
import { LocalStorage } from '../../src/storage/index.js'
import { LocalPutThread, WORKER_SOURCE } from '../../src/storage/local-put-thread.js'

const base = mkdtempSync(path.join(tmpdir(), 'taskpoint-review-filethread-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))
const fresh = (): string => mkdtempSync(path.join(base, 'r-'))

/** `n` bytes of `fill` in shared memory, as a background commit's chunks are. */
function shared(n: number, fill: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(n)).fill(fill)
}

describe('create-if-absent retries of the file thread', () => {
  it("a link that failed (and whose temp file was removed) is not taken for our own object when another writer's file reuses its inode", async () => {
    // One transient failure of link(2) (EBUSY, as a network or FUSE file system can answer): the
    // thread has already reported the temp file's inode, then removes the file. ext4 hands that
    // inode number to the next file created, here another writer's create of the same key.
    const link = 'fs.linkSync(m.tmp, m.target)'
    const source = WORKER_SOURCE.replace(
      link,
      `if (!globalThis.failedOnce) { globalThis.failedOnce = true; throw Object.assign(new Error('EBUSY: resource busy or locked, link'), { code: 'EBUSY', syscall: 'link' }) } ${link}`,
    )
    expect(source).not.toBe(WORKER_SOURCE)
    const thread = new LocalPutThread(source)
    const root = fresh()
    const target = path.join(root, 'manifests', '1')
    const inodes: number[] = []
    const s = new LocalStorage(root, {
      retry: {
        retries: 2,
        minTimeoutMs: 1,
        // Between our attempts another writer creates the key (O_EXCL, as its own create-if-absent).
        onRetry: () => {
          writeFileSync(target, 'theirs', { flag: 'wx' })
          inodes.push(statSync(target).ino)
        },
      },
    })
    ;(s as { thread: LocalPutThread | undefined }).thread = thread
    const outcome = await s.put('manifests/1', shared(100, 1), { ifAbsent: true }).then(
      (info) => `created (size ${info.size})`,
      (e: unknown) => (e instanceof StorageError ? e.code : String(e)),
    )
    await thread.close()
    expect(inodes).toHaveLength(1)
    expect(readFileSync(target, 'utf8')).toBe('theirs')
    // On 991ce2e: 'created (size 6)': the put reports a create it did not make (the inode of its
    // removed temp file stayed in \`own\`), so two create-if-absent writers both win.
    expect(outcome).toBe('AlreadyExists')
  })
})
