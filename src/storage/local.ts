import { constants as fsc, type Stats } from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import pLimit from 'p-limit'
import { SizeMismatchError, StorageConfigError } from '../errors.js'
import { defineDriver, type DriverOptionsBase } from './driver.js'
import { tempName, validateKey, validatePrefix } from './keys.js'
import { mapLocalError } from './local-errors.js'
import { localPutThread, type FilePutError, type LocalPutThread } from './local-put-thread.js'
import { type ListedFile, listed, mtimeOf, sweepTempFiles, syncDir, tagOf, walk, writeBody } from './local-fs.js'
import { optionChecks } from './option-checks.js'
import { operationRunner, type Runner } from './retry.js'
import type { Body, GetOptions, ListOptions, ObjectInfo, PutOptions, Storage, StorageCapabilities, SweepOptions, SweepResult } from './types.js'

export interface LocalStorageOptions extends DriverOptionsBase {
  /**
   * fsync files and their directory on every put, so a committed object survives power loss,
   * not just a process crash. Default true; turn off only for throwaway runs.
   */
  durable?: boolean
  /**
   * Write bodies in shared memory (a background commit's chunks) and small ones (manifests,
   * markers) from a worker thread, each put in one message instead of eight file operations that
   * each wait for the calling thread's event loop (see LocalPutThread). Default true. Off: every
   * put runs on the calling thread, as where worker threads are not allowed (that is detected).
   */
  fileThread?: boolean
}

/**
 * Objects as files under a root directory. Writes go to a temp file beside the target, are
 * fsynced, then renamed (or hard-linked for create-if-absent) into place, and the directory is
 * fsynced: a crash at any instant leaves either the old object or the new one, never a torn one.
 */
export class LocalStorage implements Storage {
  readonly backend = 'local' as const
  // A few parallel transfers keep a disk busy; more only add seeks and open files.
  readonly capabilities: StorageCapabilities
  readonly uri: string
  readonly root: string
  private readonly durable: boolean
  /** Directories holding `batch` puts whose entries are not yet fsynced. */
  private readonly unsyncedDirs = new Set<string>()
  /** Directories this instance made or found (see openTemp). */
  private readonly knownDirs = new Set<string>()
  private readonly run: Runner
  /** The process's file thread, unless turned off (see LocalStorageOptions.fileThread). */
  readonly thread: LocalPutThread | undefined

  constructor(root: string, options: LocalStorageOptions = {}) {
    this.root = path.resolve(root)
    this.uri = `file://${this.root}`
    this.capabilities = { conditionalCreate: true, preferredConcurrency: 8, localRoot: this.root }
    const check = optionChecks('local')
    this.durable = check.boolean('durable', options.durable, true)
    this.thread = check.boolean('fileThread', options.fileThread, true) ? localPutThread() : undefined
    // No stall timer: a file operation cannot be aborted, and an abandoned attempt would race its
    // retry into the same target. The operation's deadline still bounds every call.
    this.run = operationRunner({
      backend: 'local',
      retry: options.retry,
      // File operations draw nothing from Math.random.
      attemptsUseRandom: false,
      mapError: (e, op, key) => mapLocalError(e, key === undefined ? { backend: 'local', op } : { backend: 'local', key, op }),
    })
  }

  prepareWrites(): void {
    this.thread?.prestart()
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
    // Inodes of the files this call created, should a later step fail and the put be retried:
    // meeting one of them at the target is our own create, not someone else's.
    const own: number[] = []
    const durable = this.durable && options.ephemeral !== true
    const thread = body instanceof Uint8Array && this.thread?.takes(body) ? this.thread : undefined
    return this.run('put', key, async () => {
      if (thread && !thread.stopped) return this.putInThread(thread, key, dir, target, body as Uint8Array, options, durable, own)
      const { fh, tmp } = await this.openTemp(dir, key)
      let size = 0
      let st: Stats
      try {
        try {
          size = await writeBody(fh, body, key, options)
          // The tag is read from the descriptor, beside the fsync: rename and link keep the inode,
          // size and mtime, and a later put to the same key cannot slip its own tag in.
          ;[st] = await Promise.all([fh.stat(), durable ? fh.sync() : undefined])
        } finally {
          await fh.close()
        }
        if (options.ifAbsent) {
          // link(2) fails with EEXIST atomically when the target exists: a true create-if-absent.
          try {
            await fs.link(tmp, target)
            // Only once linked: a temp file removed after a failed link frees its inode number,
            // which the file system may give to another writer's file at this very key.
            own.push(st.ino)
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
            // Our own link of an earlier attempt (its reply lost): that file is the object.
            st = await fs.stat(target)
            if (!own.includes(st.ino)) throw e
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
      if (durable) {
        if (options.batch) this.unsyncedDirs.add(dir)
        else await pLimit(4).map(this.chainOf(dir), syncDir)
      }
      return { key, size, etag: tagOf(st), lastModified: st.mtime }
    })
  }

  /** One attempt of put() by the file thread: the same steps, in one message (see LocalPutThread). */
  private async putInThread(
    thread: LocalPutThread,
    key: string,
    dir: string,
    target: string,
    body: Uint8Array,
    options: PutOptions,
    durable: boolean,
    own: number[],
  ): Promise<ObjectInfo> {
    for (let i = 0; ; i++) {
      // This attempt's file, as the thread reports it before a create-if-absent links it: should
      // the thread die after the link, the retry knows the object for its own by that inode.
      let mine: number | undefined
      try {
        // The root once per instance (directories above it that mkdir makes need fsyncs of their
        // own, see ensureDir). Below it the thread makes the directory itself when the open finds
        // none: one message instead of a mkdir round trip first, and the entries it adds are in
        // the chain of directories the put fsyncs.
        await this.ensureRoot(key)
        const put = {
          tmp: path.join(dir, tempName()),
          target,
          sync: durable,
          ifAbsent: options.ifAbsent === true,
          own,
          dirs: durable && !options.batch ? this.chainOf(dir) : [],
        }
        const st = await thread.put(put, body, { backend: 'local', key, op: 'put' }, (ino) => {
          mine = ino
          own.push(ino)
        })
        if (durable && options.batch) this.unsyncedDirs.add(dir)
        options.onProgress?.({ key, loaded: st.size, total: body.byteLength })
        return { key, size: st.size, etag: tagOf(st), lastModified: mtimeOf(st.mtimeMs) }
      } catch (e) {
        const { stage, code } = e as FilePutError
        // The link failed and the thread removed the file: its inode number is free for any other
        // file, another writer's at this key included, and must not count as ours.
        if (stage === 'place' && mine !== undefined) own.splice(own.indexOf(mine), 1)
        // The directory was removed since it was made, by a prune beside us (inside the recursive
        // mkdir, or before the file was opened in it): made again, and tried again (see openTemp).
        if (code !== 'ENOENT' || (stage !== 'open' && stage !== undefined) || i >= 9) throw e
        this.knownDirs.delete(dir)
      }
    }
  }

  /**
   * A new temp file in `dir`, creating the directory if needed. Its name is short whatever the
   * key (NAME_MAX is 255 bytes) and carries TEMP_MARK, so listings skip it and sweep() finds it.
   * A directory removed between mkdir and open (a concurrent delete pruning empty directories)
   * is simply created again.
   */
  private async openTemp(dir: string, key: string): Promise<{ fh: fs.FileHandle; tmp: string }> {
    // A concurrent delete may remove the directory (left empty) between our mkdir and open, or
    // even inside the recursive mkdir: both show as ENOENT and are tried again.
    for (let i = 0; ; i++) {
      const tmp = path.join(dir, tempName())
      try {
        await this.ensureRoot(key)
        await this.ensureDir(dir)
        return { fh: await fs.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644), tmp }
      } catch (e) {
        this.knownDirs.delete(dir)
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || i >= 9) throw e
      }
    }
  }

  /**
   * Makes `dir` unless this instance has seen it (a chunk commit puts hundreds of objects into the
   * same few). A directory removed since shows as ENOENT when a file is created in it: the caller
   * forgets it and comes back here.
   */
  private async ensureDir(dir: string): Promise<void> {
    if (this.knownDirs.has(dir)) return
    const created = await fs.mkdir(dir, { recursive: true })
    // Directories above the root that we had to create: their entries must be durable too.
    // Also for an ephemeral put (so `this.durable`, not the put's own): the root it created is
    // where later durable puts go, and theirs fsync directories only up to the root.
    if (created !== undefined && this.durable && !created.startsWith(this.root + path.sep)) await this.syncAbove(created)
    if (this.knownDirs.size >= 4096) this.knownDirs.clear()
    this.knownDirs.add(dir)
  }

  /**
   * Makes the root unless this instance has seen it. A file in its place or on its path is the
   * storage's configuration at fault, not the key's (mapLocalError would blame the key).
   */
  private async ensureRoot(key: string): Promise<void> {
    try {
      await this.ensureDir(this.root)
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      if (code !== 'ENOTDIR' && code !== 'EEXIST') throw e
      throw new StorageConfigError(
        { backend: 'local', op: 'put', key, cause: e },
        `the storage root ${this.root} is not a directory (${code}: a file is at it or on its path): open the storage on a directory`,
      )
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
    // Only where a writer started the threads: a reader (the CLI's ls, a restore) starts none.
    const thread = this.thread?.running ? this.thread : undefined
    const here = async (): Promise<ListedFile[]> => {
      const out: ListedFile[] = []
      await walk(baseDir, baseKey, prefix, out, options.startAfter)
      return out
    }
    const found = await this.run('list', prefix || undefined, async () => {
      if (!thread || thread.stopped) return here()
      // A failure with no errno is the thread's code failing, not the file system (its source
      // rewritten by a coverage tool, say): this listing runs here instead.
      return thread.list(baseDir, baseKey, prefix, options.startAfter, { backend: 'local', op: 'list', ...(prefix ? { key: prefix } : {}) }).catch((e: unknown) => {
        if ((e as FilePutError).code === undefined && (e as FilePutError).stage === 'list') return here()
        throw e
      })
    })
    found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    for (const f of found) yield listed(f)
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
    await pLimit(16).map(paths, async (p, i) => {
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
    if (dirs.size === 0) return
    const thread = this.thread?.takes() ? this.thread : undefined
    await this.run('sync', undefined, () =>
      thread && !thread.stopped
        ? thread.syncDirs([...dirs], { backend: 'local', op: 'sync' })
        : pLimit(16)
            .map([...dirs], (d) =>
              // A directory deleted since (its objects deleted too) has nothing left to make durable.
              syncDir(d).catch((e: NodeJS.ErrnoException) => {
                if (e.code !== 'ENOENT') throw e
              }),
            )
            .then(() => undefined),
    )
  }

  /**
   * Removes temp files of killed writers: every file under the root whose name carries TEMP_MARK
   * and that was last written more than `olderThanMs` ago (a live writer's temp file keeps a
   * recent mtime while it writes).
   */
  async sweep(options: SweepOptions = {}): Promise<SweepResult> {
    const olderThanMs = options.olderThanMs ?? 60 * 60_000
    return this.run('sweep', undefined, () => sweepTempFiles(this.root, olderThanMs))
  }

  async close(): Promise<void> {}
}

/** Plain paths and `file://` URIs. Registered in registry.ts. */
export const driver = defineDriver<LocalStorageOptions>({
  name: 'local',
  open: (location, options) => new LocalStorage(location.bucket, options),
})
