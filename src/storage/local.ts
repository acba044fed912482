import { randomBytes } from 'node:crypto'
import { constants as fsc, createReadStream } from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import {
  AccessDeniedError,
  AlreadyExistsError,
  InvalidKeyError,
  NoSpaceError,
  NotFoundError,
  SizeMismatchError,
  StorageError,
  StorageConfigError,
  TransientStorageError,
  type StorageErrorDetails,
} from '../errors.js'
import { mapLimit } from '../concurrency.js'
import { TEMP_MARK, tempName, validateKey, validatePrefix } from './keys.js'
import { operationRunner, type RetryOptions, type Runner } from './retry.js'
import type { Body, GetOptions, ListOptions, ObjectInfo, PutOptions, Storage, SweepOptions, SweepResult, TransferProgress } from './types.js'

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
  private readonly run: Runner

  constructor(root: string, options: LocalStorageOptions = {}) {
    this.root = path.resolve(root)
    this.uri = `file://${this.root}`
    this.durable = options.durable ?? true
    // No stall timer: a file operation cannot be aborted, and an abandoned attempt would race its
    // retry into the same target. The operation's deadline still bounds every call.
    this.run = operationRunner({
      backend: 'local',
      retry: options.retry,
      mapError: (e, op, key) => mapLocalError(e, key === undefined ? { backend: 'local', op } : { backend: 'local', key, op }),
    })
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
    const dir = path.dirname(target)
    // The inode this call linked into place, should a later step fail and the put be retried:
    // meeting it again at the target is our own create, not someone else's.
    let linkedIno: number | undefined
    return this.run('put', key, async () => {
      const { fh, tmp } = await this.openTemp(dir)
      let size = 0
      try {
        try {
          size = await writeBody(fh, body, key, options)
          if (this.durable) await fh.sync()
        } finally {
          await fh.close()
        }
        if (options.ifAbsent) {
          // link(2) fails with EEXIST atomically when the target exists: a true create-if-absent.
          try {
            await fs.link(tmp, target)
            linkedIno = (await fs.stat(tmp)).ino
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || linkedIno === undefined || (await fs.stat(target)).ino !== linkedIno) throw e
          }
          // The object is in place; a temp name left behind is only litter (sweep() removes it).
          await fs.unlink(tmp).catch(() => {})
        } else {
          await fs.rename(tmp, target)
        }
      } catch (e) {
        await fs.rm(tmp, { force: true })
        throw e
      }
      if (this.durable) {
        if (options.batch) this.unsyncedDirs.add(dir)
        else await mapLimit(this.chainOf(dir), 4, syncDir)
      }
      const st = await fs.stat(target)
      return { key, size, etag: tagOf(st), lastModified: st.mtime }
    })
  }

  /**
   * A new temp file in `dir`, creating the directory if needed. Its name is short whatever the
   * key (NAME_MAX is 255 bytes) and carries TEMP_MARK, so listings skip it and sweep() finds it.
   * A directory removed between mkdir and open (a concurrent delete pruning empty directories)
   * is simply created again.
   */
  private async openTemp(dir: string): Promise<{ fh: fs.FileHandle; tmp: string }> {
    for (let i = 0; ; i++) {
      const created = await fs.mkdir(dir, { recursive: true })
      // Directories above the root that we had to create: their entries must be durable too.
      if (created !== undefined && this.durable && !created.startsWith(this.root + path.sep)) await this.syncAbove(created)
      const tmp = path.join(dir, tempName())
      try {
        return { fh: await fs.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644), tmp }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || i >= 4) throw e
      }
    }
  }

  /** `dir` and every directory above it up to the root: the entries a new file depends on. */
  private chainOf(dir: string): string[] {
    const out: string[] = []
    for (let d = dir; d === this.root || d.startsWith(this.root + path.sep); d = path.dirname(d)) out.push(d)
    return out
  }

  /** fsyncs the parents of the root and of every directory above it that mkdir just created. */
  private async syncAbove(created: string): Promise<void> {
    for (let d = path.dirname(this.root); ; d = path.dirname(d)) {
      await syncDir(d)
      if (d === path.dirname(created) || d === path.dirname(d)) return
    }
  }

  async get(key: string, options: GetOptions = {}): Promise<Uint8Array> {
    const p = this.pathOf(key, 'get')
    return this.run('get', key, async () => {
      const fh = await fs.open(p, 'r')
      try {
        const st = await fh.stat()
        if (!st.isFile()) throw Object.assign(new Error('not a file'), { code: 'ENOENT' })
        const size = st.size
        const start = Math.min(options.range?.offset ?? 0, size)
        const len = Math.max(0, Math.min(options.range?.length ?? size - start, size - start))
        if (options.into && options.into.byteLength < len) throw new SizeMismatchError({ backend: 'local', key, op: 'get' }, options.into.byteLength, len)
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

  async *list(prefix = '', options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix, 'local')
    // Walk only the directory the prefix lives in; keys are filtered by string prefix afterwards,
    // and sorted as whole strings so the order matches S3/GCS listings.
    const slash = prefix.lastIndexOf('/')
    const baseKey = slash >= 0 ? prefix.slice(0, slash) : ''
    const baseDir = baseKey ? path.join(this.root, ...baseKey.split('/')) : this.root
    const found: ObjectInfo[] = await this.run('list', prefix || undefined, async () => {
      const out: ObjectInfo[] = []
      await walk(baseDir, baseKey, prefix, out, options.startAfter)
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

  /**
   * fsyncs each directory that holds a batch put and every directory above it up to the root, so
   * directories the batch created (`chunks/xx/`) cannot vanish with their entries after a power loss.
   */
  async sync(): Promise<void> {
    const dirs = new Set<string>()
    for (const d of this.unsyncedDirs) for (const c of this.chainOf(d)) dirs.add(c)
    this.unsyncedDirs.clear()
    await this.run('sync', undefined, () =>
      mapLimit([...dirs], 16, (d) =>
        // A directory deleted since (its objects deleted too) has nothing left to make durable.
        syncDir(d).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'ENOENT') throw e
        }),
      ).then(() => undefined),
    )
  }

  /**
   * Removes temp files of killed writers: every file under the root whose name carries TEMP_MARK
   * and that was last written more than `olderThanMs` ago (a live writer's temp file keeps a
   * recent mtime while it writes).
   */
  async sweep(options: SweepOptions = {}): Promise<SweepResult> {
    const olderThanMs = options.olderThanMs ?? 60 * 60_000
    const result: SweepResult = { removed: 0, bytes: 0, items: [] }
    const visit = async (dir: string, rel: string): Promise<void> => {
      let entries: import('node:fs').Dirent[]
      try {
        entries = await fs.readdir(dir, { withFileTypes: true })
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return
        throw e
      }
      for (const ent of entries) {
        const full = path.join(dir, ent.name)
        const key = rel ? `${rel}/${ent.name}` : ent.name
        if (ent.isDirectory()) await visit(full, key)
        else if (ent.name.includes(TEMP_MARK)) {
          const st = await fs.stat(full).catch(() => undefined)
          if (!st || Date.now() - st.mtimeMs < olderThanMs) continue
          try {
            await fs.unlink(full)
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue // renamed into place or removed meanwhile
            throw e
          }
          result.removed++
          result.bytes += st.size
          result.items.push(key)
        }
      }
    }
    await this.run('sweep', undefined, () => visit(this.root, ''))
    return result
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

async function walk(dir: string, dirKey: string, prefix: string, out: ObjectInfo[], startAfter?: string): Promise<void> {
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
      if (prefix.startsWith(`${key}/`) || `${key}/`.startsWith(prefix)) await walk(path.join(dir, ent.name), key, prefix, out, startAfter)
    } else if (ent.isFile() && key.startsWith(prefix) && (startAfter === undefined || key > startAfter)) {
      // Filtered before the stat: a listing after a recent key costs one readdir, not a stat per file.
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
    case 'EDQUOT':
      return new NoSpaceError(withCause, `no space left (${code}: disk or quota full): free space or prune old checkpoints (\`taskpoint prune\`)`)
    case 'ENAMETOOLONG':
      return new InvalidKeyError(withCause, 'a key segment is longer than the file system allows (255 bytes per name on most): use shorter names')
    case 'EISDIR':
    case 'ENOTEMPTY':
      return new InvalidKeyError(withCause, `the key names a directory of other keys (${code}): on local disk "a" and "a/b" cannot both exist`)
    default:
      return new StorageError('Unknown', `file-system error ${code ?? ''}: ${(e as Error)?.message ?? String(e)}`.trim(), withCause)
  }
}
