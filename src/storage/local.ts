import { randomBytes } from 'node:crypto'
import { constants as fsc, createReadStream } from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import {
  AccessDeniedError,
  AlreadyExistsError,
  NotFoundError,
  StorageError,
  StorageConfigError,
  TransientStorageError,
  type StorageErrorDetails,
} from '../errors.js'
import { mapLimit } from '../concurrency.js'
import { TEMP_MARK, validateKey, validatePrefix } from './keys.js'
import { operationRunner, type RetryOptions } from './retry.js'
import type { Body, GetOptions, ObjectInfo, PutOptions, Storage, TransferProgress } from './types.js'

export interface LocalStorageOptions {
  /**
   * fsync files and their directory on every put, so a committed object survives power loss,
   * not just a process crash. Default true; turn off only for throwaway runs.
   */
  durable?: boolean
  retry?: RetryOptions
}

/**
 * Objects as files under a root directory. Writes go to a temp file beside the target, are
 * fsynced, then renamed (or hard-linked for create-if-absent) into place, and the directory is
 * fsynced: a crash at any instant leaves either the old object or the new one, never a torn one.
 */
export class LocalStorage implements Storage {
  readonly backend = 'local' as const
  readonly capabilities = { conditionalCreate: true }
  readonly uri: string
  readonly root: string
  private readonly durable: boolean
  /** Directories holding `batch` puts whose entries are not yet fsynced. */
  private readonly unsyncedDirs = new Set<string>()
  private readonly run: ReturnType<typeof operationRunner>

  constructor(root: string, options: LocalStorageOptions = {}) {
    this.root = path.resolve(root)
    this.uri = `file://${this.root}`
    this.durable = options.durable ?? true
    this.run = operationRunner(options.retry, (e, op, key) => mapLocalError(e, key === undefined ? { backend: 'local', op } : { backend: 'local', key, op }))
  }

  private pathOf(key: string, op: string): string {
    validateKey(key, 'local', op)
    const p = path.join(this.root, ...key.split('/'))
    // Defence in depth: validation already forbids '..', but never touch anything outside root.
    if (!p.startsWith(this.root + path.sep)) throw new StorageConfigError({ backend: 'local', key, op }, 'key resolves outside the storage root')
    return p
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<ObjectInfo> {
    const target = this.pathOf(key, 'put')
    return this.run('put', key, async () => {
      const dir = path.dirname(target)
      const tmp = `${target}${TEMP_MARK}${randomBytes(6).toString('hex')}`
      let size = 0
      try {
        const fh = await openTemp(dir, tmp)
        try {
          size = await writeBody(fh, body, key, options)
          if (this.durable) await fh.sync()
        } finally {
          await fh.close()
        }
        if (options.ifAbsent) {
          // link(2) fails with EEXIST atomically when the target exists: a true create-if-absent.
          await fs.link(tmp, target)
          await fs.unlink(tmp)
        } else {
          await fs.rename(tmp, target)
        }
      } catch (e) {
        await fs.rm(tmp, { force: true })
        throw e
      }
      if (this.durable) {
        if (options.batch) this.unsyncedDirs.add(dir)
        else await syncDir(dir)
      }
      const st = await fs.stat(target)
      return { key, size, etag: tagOf(st), lastModified: st.mtime }
    })
  }

  async get(key: string, options: GetOptions = {}): Promise<Uint8Array> {
    const p = this.pathOf(key, 'get')
    return this.run('get', key, async () => {
      const fh = await fs.open(p, 'r')
      try {
        const { size } = await fh.stat()
        const start = Math.min(options.range?.offset ?? 0, size)
        const len = Math.max(0, Math.min(options.range?.length ?? size - start, size - start))
        if (options.into && options.into.byteLength < len) throw new RangeError(`get(${key}): 'into' has ${options.into.byteLength} bytes, the object ${len}`)
        const buf = options.into ? options.into.subarray(0, len) : new Uint8Array(len)
        let done = 0
        while (done < len) {
          const { bytesRead } = await fh.read(buf, done, len - done, start + done)
          if (bytesRead === 0) break
          done += bytesRead
        }
        return done === len ? buf : buf.subarray(0, done)
      } finally {
        await fh.close()
      }
    })
  }

  async getStream(key: string): Promise<Readable> {
    const p = this.pathOf(key, 'get')
    return this.run('get', key, async () => {
      const fh = await fs.open(p, 'r')
      return createReadStream('', { fd: fh.fd, autoClose: true, highWaterMark: 1 << 20 }).on('close', () => void fh.close().catch(() => {}))
    })
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const p = this.pathOf(key, 'head')
    return this.run('head', key, async () => {
      try {
        const st = await fs.stat(p)
        if (!st.isFile()) return undefined
        return { key, size: st.size, etag: tagOf(st), lastModified: st.mtime }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined
        throw e
      }
    })
  }

  async *list(prefix = ''): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix, 'local')
    // Walk only the directory the prefix lives in; keys are filtered by string prefix afterwards,
    // and sorted as whole strings so the order matches S3/GCS listings.
    const slash = prefix.lastIndexOf('/')
    const baseKey = slash >= 0 ? prefix.slice(0, slash) : ''
    const baseDir = baseKey ? path.join(this.root, ...baseKey.split('/')) : this.root
    const found: ObjectInfo[] = await this.run('list', prefix || undefined, async () => {
      const out: ObjectInfo[] = []
      await walk(baseDir, baseKey, prefix, out)
      return out
    })
    found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    yield* found
  }

  async delete(key: string): Promise<void> {
    const p = this.pathOf(key, 'delete')
    await this.run('delete', key, async () => {
      await fs.rm(p, { force: true })
      await this.pruneEmptyDirs(path.dirname(p))
    })
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    const paths = keys.map((k) => this.pathOf(k, 'delete'))
    await mapLimit(paths, 16, async (p, i) => {
      await this.run('delete', keys[i], () => fs.rm(p, { force: true }))
    })
    const dirs = [...new Set(paths.map((p) => path.dirname(p)))]
    for (const d of dirs) await this.pruneEmptyDirs(d)
  }

  /** Removes directories left empty by deletes, up to (not including) the root. */
  private async pruneEmptyDirs(dir: string): Promise<void> {
    while (dir.startsWith(this.root + path.sep)) {
      try {
        await fs.rmdir(dir)
      } catch {
        return
      }
      dir = path.dirname(dir)
    }
  }

  async sync(): Promise<void> {
    const dirs = [...this.unsyncedDirs]
    this.unsyncedDirs.clear()
    await this.run('sync', undefined, () => mapLimit(dirs, 16, syncDir).then(() => undefined))
  }

  async close(): Promise<void> {}
}

function tagOf(st: { size: number; mtimeMs: number; ino: number }): string {
  return `${st.ino.toString(16)}-${st.size.toString(16)}-${Math.floor(st.mtimeMs * 1000).toString(16)}`
}

async function writeBody(fh: fs.FileHandle, body: Body, key: string, options: PutOptions): Promise<number> {
  const report = (loaded: number, total?: number): void => {
    const p: TransferProgress = { key, loaded }
    if (total !== undefined) p.total = total
    options.onProgress?.(p)
  }
  if (body instanceof Uint8Array) {
    let off = 0
    while (off < body.byteLength) {
      const { bytesWritten } = await fh.write(body, off, body.byteLength - off)
      off += bytesWritten
    }
    report(off, body.byteLength)
    return off
  }
  let total = 0
  for await (const piece of body.open() as AsyncIterable<Uint8Array>) {
    options.signal?.throwIfAborted()
    let off = 0
    while (off < piece.byteLength) {
      const { bytesWritten } = await fh.write(piece, off, piece.byteLength - off)
      off += bytesWritten
    }
    total += piece.byteLength
    report(total, body.size)
  }
  if (total === 0) report(0, body.size)
  return total
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

async function walk(dir: string, dirKey: string, prefix: string, out: ObjectInfo[]): Promise<void> {
  let entries: import('node:fs').Dirent[]
  try {
    entries = await fs.readdir(dir, { withFileTypes: true })
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return
    throw e
  }
  for (const ent of entries) {
    if (ent.name.includes(TEMP_MARK)) continue
    const key = dirKey ? `${dirKey}/${ent.name}` : ent.name
    if (ent.isDirectory()) {
      // Descend only where keys below could still match the prefix.
      if (prefix.startsWith(`${key}/`) || `${key}/`.startsWith(prefix)) await walk(path.join(dir, ent.name), key, prefix, out)
    } else if (ent.isFile() && key.startsWith(prefix)) {
      const st = await fs.stat(path.join(dir, ent.name)).catch(() => undefined)
      if (st) out.push({ key, size: st.size, etag: tagOf(st), lastModified: st.mtime })
    }
  }
}

function mapLocalError(e: unknown, d: StorageErrorDetails): unknown {
  if (e instanceof StorageError) return e
  const code = (e as NodeJS.ErrnoException).code
  const withCause = { ...d, cause: e }
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new NotFoundError(withCause)
    case 'EEXIST':
      return new AlreadyExistsError(withCause)
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new AccessDeniedError(withCause, `permission denied (${code}): check that the process may write under this directory`)
    case 'EAGAIN':
    case 'EBUSY':
    case 'EMFILE':
    case 'ENFILE':
    case 'EINTR':
      return new TransientStorageError(withCause, `temporary file-system error ${code}`)
    case 'ENOSPC':
      return new StorageError('Unknown', 'disk full (ENOSPC): free space or prune old checkpoints (`taskpoint prune`)', withCause)
    default:
      return e
  }
}

/**
 * Creates a put's temporary file. A delete of the directory's last object may remove the directory
 * (pruneEmptyDirs) between our mkdir and this open, e.g. a collector releasing its lock while a
 * writer takes one: the directory is made again rather than the put failing with NotFound.
 */
async function openTemp(dir: string, tmp: string): Promise<fs.FileHandle> {
  for (let attempt = 0; ; attempt++) {
    try {
      // mkdir itself can fail with ENOENT when the directory goes between its steps.
      await fs.mkdir(dir, { recursive: true })
      return await fs.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 10) throw e
    }
  }
}
