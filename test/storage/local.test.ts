import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3'
import { LocalStorage } from '../../src/storage/index.js'
import { failure, tempFiles } from '../helpers/common.js'
import { S3_BUCKET, s3Backend, s3Config } from '../helpers/backends.js'

// Child processes run the compiled driver: `npm run build` first.
const dist = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'src', 'storage', 'local.js')
const base = mkdtempSync(path.join(tmpdir(), 'taskpoint-localdrv-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))
const fresh = (): string => mkdtempSync(path.join(base, 'r-'))

describe('local driver', () => {
  it('sweep() removes the temp file of a writer SIGKILLed in the middle of a large put, and nothing else', async () => {
    expect(existsSync(dist), 'run `npm run build` first').toBe(true)
    const root = path.join(fresh(), 'store')
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { LocalStorage } = await import(${JSON.stringify(dist)})
         const s = new LocalStorage(process.argv[1])
         await s.put('kept/one', Buffer.from('one'))
         await s.put('chunks/ab/big', { size: 1 << 30, async *open() {
           for (let i = 0; ; i++) {
             yield Buffer.alloc(1 << 20, i)
             if (i === 4) process.stdout.write('WRITING\\n')
             await new Promise((r) => setTimeout(r, 2))
           }
         } })`,
        root,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => d.toString().includes('WRITING') && resolve())
      child.once('exit', (code) => reject(new Error(`writer exited (${code}) before writing`)))
    })
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGKILL')
    await exited

    const s = new LocalStorage(root)
    const litter = tempFiles(root)
    expect(litter).toHaveLength(1)
    // Its name is short whatever the key, and it is invisible to listings.
    expect(path.basename(litter[0]!).length).toBeLessThanOrEqual(32)
    const keys: string[] = []
    for await (const o of s.list()) keys.push(o.key)
    expect(keys).toEqual(['kept/one'])

    // A young temp file may belong to a live writer: left alone.
    expect(await s.sweep({ olderThanMs: 60 * 60_000 })).toEqual({ removed: 0, bytes: 0, items: [] })
    const r = await s.sweep({ olderThanMs: 0 })
    expect(r.removed).toBe(1)
    expect(r.bytes).toBeGreaterThanOrEqual(4 << 20)
    expect(r.items[0]).toMatch(/^chunks\/ab\/\.tp-tmp-/)
    expect(tempFiles(root)).toEqual([])
    expect(Buffer.from(await s.get('kept/one')).toString()).toBe('one')
    await s.put('chunks/ab/big', Buffer.from('again'))
    expect(Buffer.from(await s.get('chunks/ab/big')).toString()).toBe('again')
  }, 60_000)

  const hasStrace = spawnSync('strace', ['-V']).status === 0
  it.skipIf(!hasStrace)(
    `every directory a put creates is fsynced in its parent before the put (or sync() of a batch) returns${hasStrace ? '' : ' [skipped: strace not installed]'}`,
    () => {
      expect(existsSync(dist), 'run `npm run build` first').toBe(true)
      const root = path.join(fresh(), 'new', 'store')
      const log = path.join(base, `strace-${Date.now()}.log`)
      const script = `const { LocalStorage } = await import(${JSON.stringify(dist)})
        const fs = await import('node:fs')
        const s = new LocalStorage(process.argv[1])
        await s.put('manifests/m1', Buffer.from('m'))
        fs.writeSync(1, 'MARK-PUT\\n')
        await s.put('chunks/cd/x1', Buffer.from('1'), { batch: true })
        await s.put('chunks/ef/x2', Buffer.from('2'), { batch: true })
        fs.writeSync(1, 'MARK-BATCH\\n')
        await s.sync()
        fs.writeSync(1, 'MARK-SYNC\\n')
        await s.put('locks/l1', Buffer.from('l'), { ephemeral: true })
        await s.put('locks/l1', Buffer.from('l2'), { ephemeral: true })
        fs.writeSync(1, 'MARK-EPHEMERAL\\n')
        await s.sync()
        fs.writeSync(1, 'MARK-END\\n')
        fs.writeSync(1, Buffer.from(await s.get('locks/l1')).toString() + '\\n')
        // An ephemeral put that creates its root: later durable puts there fsync only up to the root.
        await new LocalStorage(process.argv[1] + '-eph').put('locks/l', Buffer.from('e'), { ephemeral: true })
        fs.writeSync(1, 'MARK-EPH-ROOT\\n')`
      execFileSync('strace', ['-f', '-y', '-e', 'trace=fsync,fdatasync,write', '-o', log, process.execPath, '--input-type=module', '-e', script, root], {
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      const lines = readFileSync(log, 'utf8').split('\n')
      const mark = (m: string): number => lines.findIndex((l) => l.includes(`"${m}\\n"`))
      const synced = (from: number, to: number): string[] =>
        lines.slice(from, to).flatMap((l) => {
          // A failed fsync fails the child (execFileSync throws); calls may be split as <unfinished ...>.
          const m = /fsync\(\d+<([^>]+)>/.exec(l)
          return m ? [m[1]!] : []
        })
      const [put, batch, sync, ephemeral, end] = [mark('MARK-PUT'), mark('MARK-BATCH'), mark('MARK-SYNC'), mark('MARK-EPHEMERAL'), mark('MARK-END')]
      expect(put).toBeGreaterThan(0)
      expect(batch).toBeGreaterThan(put)
      expect(sync).toBeGreaterThan(batch)
      // manifests/ is new, and so are store/ and new/ above the root: each entry is made durable.
      const beforePut = synced(0, put)
      for (const d of [path.join(root, 'manifests'), root, path.dirname(root), path.dirname(path.dirname(root))]) expect(beforePut).toContain(d)
      // The batch's new chunks/cd, chunks/ef and chunks/ become durable by sync(), before it returns.
      const inSync = synced(batch, sync)
      for (const d of [path.join(root, 'chunks', 'cd'), path.join(root, 'chunks', 'ef'), path.join(root, 'chunks'), root]) expect(inSync).toContain(d)
      // Ephemeral puts (locks, hints) fsync nothing, not even at the next sync(), and still land whole.
      expect(end).toBeGreaterThan(ephemeral)
      expect(ephemeral).toBeGreaterThan(sync)
      expect(synced(sync, end + 1)).toEqual([])
      expect(lines.some((l) => l.includes('"l2\\n"'))).toBe(true)
      // ...but the directories it creates above a new root are made durable all the same.
      expect(synced(end, mark('MARK-EPH-ROOT'))).toEqual([path.dirname(root)])
    },
    60_000,
  )

  // A full disk (NoSpace, no temp file left, the storage usable after): test/storage/local-put-thread.test.ts,
  // from both the file thread and the calling thread.

  it('names the file system cannot hold are InvalidKey, not Unknown or a raw error', async () => {
    const s = new LocalStorage(fresh())
    expect((await failure(s.put(`x/${'n'.repeat(300)}`, Buffer.from('x')))).code).toBe('InvalidKey')
    await s.put('a/b', Buffer.from('b'))
    const e = await failure(s.put('a', Buffer.from('a')))
    expect(e.code).toBe('InvalidKey')
    expect(e.message).toMatch(/directory/)
    expect(tempFiles(s.root)).toEqual([])
  })
})

describe('S3 sweep', () => {
  // fauxqs routes GET /bucket?uploads to its object listing (no ListMultipartUploads), so a sweep
  // there can neither see nor prove anything. The test runs as is against a server that has it.
  const hasListUploads = false
  it.skipIf(!hasListUploads)(`aborts incomplete multipart uploads under the prefix${hasListUploads ? '' : ' [skipped: fauxqs lacks ListMultipartUploads]'}`, async () => {
    const b = s3Backend()
    const s = await b.open()
    const client = new S3Client(s3Config(b.endpoint!))
    const prefix = (s as unknown as { prefix: string }).prefix
    await client.send(new CreateMultipartUploadCommand({ Bucket: S3_BUCKET, Key: `${prefix}/chunks/aa/killed` }))
    const r = await s.sweep!({ olderThanMs: 0 })
    expect(r.removed).toBe(1)
    const left = await client.send(new ListMultipartUploadsCommand({ Bucket: S3_BUCKET, Prefix: `${prefix}/` }))
    expect(left.Uploads ?? []).toEqual([])
    client.destroy()
    await s.close()
  })
})
