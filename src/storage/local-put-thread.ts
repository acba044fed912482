import { Worker } from 'node:worker_threads'
import { TransientStorageError, type StorageErrorDetails } from '../errors.js'
import { TEMP_MARK } from './keys.js'
import { type ListedFile, listStep } from './local-fs.js'
import { startUpTo } from '../worker-starts.js'
import { WorkerJobs } from './worker-jobs.js'

// Why a thread: a durable put is eight file operations in a row (open, write, fsync, close, rename,
// then open, fsync and close of each directory up to the root), and each one comes back to the
// calling thread through its event loop before the next can start. A training loop turns that loop
// once per batch, so a small checkpoint's commit waited for ~40 batch ends (~0.5 s at 12 ms a batch)
// and ran ~40 callbacks on the training thread. Here one message carries a put: the thread runs
// the steps with synchronous calls and answers once. What the steps are, and every decision around
// them (directories, retries, ownership of a create-if-absent, error mapping), stays in the driver.
//
// A listing is a message too: on the calling thread it is a readdir per directory and a stat per
// file, each another trip through the event loop (a commit lists four times).
export const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const fs = require('node:fs')
const path = require('node:path')
const { O_WRONLY, O_CREAT, O_EXCL } = fs.constants
const plain = (e, stage) => ({ stage, message: String(e && e.message), code: e && e.code, errno: e && e.errno, syscall: e && e.syscall, path: e && e.path, dest: e && e.dest })
const listStep = ${listStep.toString()}
function walk(dir, dirKey, prefix, out, startAfter, tempMark) {
  let entries
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true })
  } catch (e) {
    if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return
    throw e
  }
  for (const ent of entries) {
    const key = dirKey ? dirKey + '/' + ent.name : ent.name
    const step = listStep(ent.name, key, ent.isDirectory(), ent.isFile(), prefix, startAfter, tempMark)
    if (step === 'descend') walk(path.join(dir, ent.name), key, prefix, out, startAfter, tempMark)
    else if (step === 'stat') {
      let st
      try { st = fs.statSync(path.join(dir, ent.name)) } catch { continue }
      out.push({ key, size: st.size, ino: st.ino, mtimeMs: st.mtimeMs })
    }
  }
}
function syncDirs(dirs, skipMissing) {
  for (const d of dirs) {
    let f
    try {
      f = fs.openSync(d, 'r')
    } catch (e) {
      if (skipMissing && e.code === 'ENOENT') continue
      throw e
    }
    try { fs.fsyncSync(f) } finally { fs.closeSync(f) }
  }
}
parentPort.on('message', (m) => {
  if (m.list) {
    try {
      const out = []
      walk(m.dir, m.dirKey, m.prefix, out, m.startAfter, m.tempMark)
      return parentPort.postMessage({ id: m.id, value: out })
    } catch (e) {
      return parentPort.postMessage({ id: m.id, error: plain(e, 'list') })
    }
  }
  if (m.syncOnly) {
    try {
      syncDirs(m.dirs, true)
      return parentPort.postMessage({ id: m.id, value: {} })
    } catch (e) {
      return parentPort.postMessage({ id: m.id, error: plain(e, 'dirs') })
    }
  }
  let fd
  let stage = 'open'
  let st
  try {
    // A prune beside us may remove the directory (left empty) at any moment: made again here, in
    // the same message, so the gap a message to the driver and back would leave is not there.
    for (let i = 0; fd === undefined; i++) {
      try {
        fd = fs.openSync(m.tmp, O_WRONLY | O_CREAT | O_EXCL, 0o644)
      } catch (e) {
        if (e.code !== 'ENOENT' || i >= 9) throw e
        try { fs.mkdirSync(path.dirname(m.tmp), { recursive: true }) } catch (e2) { if (e2.code !== 'ENOENT') throw e2 }
      }
    }
    stage = 'write'
    const view = new Uint8Array(m.buf, m.off, m.len)
    for (let off = 0; off < view.byteLength; ) off += fs.writeSync(fd, view, off, view.byteLength - off)
    st = fs.fstatSync(fd)
    if (m.sync) fs.fsyncSync(fd)
    fs.closeSync(fd)
    fd = undefined
    // Before the link: should this thread die after it, the driver still knows the file is its own.
    if (m.ifAbsent) parentPort.postMessage({ id: m.id, note: st.ino })
    stage = 'place'
    if (m.ifAbsent) {
      try {
        fs.linkSync(m.tmp, m.target)
      } catch (e) {
        if (e.code !== 'EEXIST') throw e
        const t = fs.statSync(m.target)
        if (!m.own.includes(t.ino)) throw e
        st = t
      }
      try { fs.unlinkSync(m.tmp) } catch {}
    } else {
      fs.renameSync(m.tmp, m.target)
    }
  } catch (e) {
    if (fd !== undefined) try { fs.closeSync(fd) } catch {}
    if (stage !== 'open') try { fs.rmSync(m.tmp, { force: true }) } catch {}
    return parentPort.postMessage({ id: m.id, error: plain(e, stage) })
  }
  try {
    syncDirs(m.dirs, false)
  } catch (e) {
    return parentPort.postMessage({ id: m.id, error: plain(e, 'dirs') })
  }
  parentPort.postMessage({ id: m.id, value: { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs } })
})
`

/** Bodies up to this size in ordinary memory are copied to the thread; larger ones stay on the calling thread (a copy would cost more than the turns it saves). */
const COPY_LIMIT = 256 * 1024

/** One durable put as the thread runs it. */
export interface FilePut {
  /** The temp file to create (O_EXCL) in the target's directory. */
  tmp: string
  target: string
  /** fsync the file before it is placed. */
  sync: boolean
  /** link(2) instead of rename(2): fails with EEXIST if the target exists, unless it is one of `own`. */
  ifAbsent: boolean
  /** Inodes of this put's earlier attempts: meeting one at the target is our own create. */
  own: number[]
  /** Directories to fsync after the file is in place, in order. */
  dirs: string[]
}

/** What the thread reports of a failed put: the errno fields, and the step it failed at. */
export type FilePutError = Error & { code?: string; stage: 'open' | 'write' | 'place' | 'dirs' | 'list' }

/** What a put reports of the file it placed. */
export interface PlacedFile {
  ino: number
  size: number
  mtimeMs: number
}

type Lane = WorkerJobs<unknown>

/**
 * `size` worker threads that write files durably for the local driver: two puts at once wrote a
 * 256 MiB commit's chunks as fast as four here, and faster than the calling thread's chain of file
 * operations on the libuv pool. All start, one after another, with the first put or at a writer's
 * claim (~10 MiB each: a fixed cost, not one that appears in the middle of a training loop); each
 * holds the process open only while it has puts. A thread that fails (cannot start, dies) fails the puts it held with a transient error, and
 * no thread is used again: those puts, retried, and all later ones run on the calling thread.
 */
export class LocalPutThread {
  private readonly lanes: Lane[] = []
  /** Threads that have started running their code ('online'). */
  private online = 0
  private broken = false
  /** Requests the threads have carried out (puts, and directory syncs). */
  done = 0

  /** `source` is the threads' code (tests hand in one that misbehaves on purpose). */
  constructor(
    private readonly source = WORKER_SOURCE,
    private readonly size = 2,
  ) {}

  get stopped(): boolean {
    return this.broken
  }

  /**
   * Whether some thread, started by a put or a writer's claim, is up and none has failed: a listing
   * sent to one still booting would wait ~25 ms for it, longer than walking on the calling thread.
   */
  get running(): boolean {
    return !this.broken && this.online > 0
  }

  /** Whether put() takes `body` (shared memory, or small enough to copy; none: syncDirs()) and the threads run. */
  takes(body?: Uint8Array): boolean {
    if (this.broken || (body && !(body.buffer instanceof SharedArrayBuffer) && body.byteLength > COPY_LIMIT)) return false
    if (this.lanes.length > 0) return true
    try {
      this.lanes.push(this.start())
    } catch {
      // The permission model without --allow-worker, a resource limit: the calling thread writes.
      this.broken = true
      return false
    }
    this.prestart()
    return true
  }

  /** Starts the threads not running yet, one after another (see worker-starts.ts). */
  prestart(): void {
    startUpTo(
      this.size,
      () => this.lanes.length,
      () => {
        if (this.broken) return undefined
        // One that cannot start is left out: with some threads running they carry the puts, with
        // none the next put finds out and the calling thread writes.
        const lane = this.start()
        this.lanes.push(lane)
        return lane.worker
      },
    )
  }

  /** The least busy thread. */
  private lane(): Lane | undefined {
    if (this.broken) return undefined
    let best = this.lanes[0]
    for (const l of this.lanes) if (l.size < best!.size) best = l
    return best
  }

  private start(): Lane {
    // No flags of the parent (see HashPool.start): the source is CommonJS.
    const lane: Lane = new WorkerJobs(new Worker(this.source, { eval: true, execArgv: [] }), 'file thread', revive, () => {
      this.broken = true
      const at = this.lanes.indexOf(lane)
      if (at >= 0) this.lanes.splice(at, 1)
    })
    lane.worker.once('online', () => this.online++)
    return lane
  }

  private send<R>(message: Record<string, unknown>, transfer: ArrayBuffer[], details: StorageErrorDetails, onIno?: (ino: number) => void): Promise<R> {
    const lane = this.lane()
    if (!lane) return Promise.reject(new TransientStorageError(details, 'the file thread stopped; retried from the calling thread'))
    const done = lane.send(message, transfer, { details, ...(onIno ? { onNote: (ino) => onIno(ino as number) } : {}) })
    return done.then((value) => {
      this.done++
      return value as R
    })
  }

  /** Runs one put of `body` (see takes()). `onIno`: the new file's inode, reported before a create-if-absent links it. */
  put(p: FilePut, body: Uint8Array, details: StorageErrorDetails, onIno?: (ino: number) => void): Promise<PlacedFile> {
    // Shared memory is read in place; anything else is copied into a buffer of its own, which is
    // handed over (not body.slice(): on a Buffer that is a view, and the caller's buffer, often
    // Node's shared pool, would be transferred away).
    const shared = body.buffer instanceof SharedArrayBuffer
    const bytes = shared ? body : new Uint8Array(body.byteLength)
    if (!shared) bytes.set(body)
    const message = { ...p, buf: bytes.buffer, off: bytes.byteOffset, len: bytes.byteLength }
    return this.send<PlacedFile>(message, shared ? [] : [bytes.buffer as ArrayBuffer], details, onIno)
  }

  /** fsyncs `dirs` in order; a directory that no longer exists is skipped (see LocalStorage.sync). */
  async syncDirs(dirs: string[], details: StorageErrorDetails): Promise<void> {
    await this.send({ syncOnly: true, dirs }, [], details)
  }

  /** The files under `dir` (whose key is `dirKey`) that a listing of `prefix` after `startAfter` returns, unsorted (see walk in local-fs.ts). */
  list(dir: string, dirKey: string, prefix: string, startAfter: string | undefined, details: StorageErrorDetails): Promise<ListedFile[]> {
    return this.send({ list: true, dir, dirKey, prefix, startAfter, tempMark: TEMP_MARK }, [], details)
  }

  async close(): Promise<void> {
    this.broken = true
    await Promise.all(this.lanes.splice(0).map((l) => l.worker.terminate()))
  }
}

/** The errno error the thread met, as fs would have thrown it on the calling thread (mapLocalError reads `code`). */
function revive(f: Record<string, unknown>): FilePutError {
  const e = new Error(String(f.message ?? 'file operation failed in the file thread')) as FilePutError & Record<string, unknown>
  for (const k of ['code', 'errno', 'syscall', 'path', 'dest', 'stage']) if (f[k] !== undefined) e[k] = f[k]
  return e
}

let shared: LocalPutThread | undefined

/** The process's file threads, shared by every local storage (they hold no state of theirs). Once stopped, they are not replaced. */
export function localPutThread(): LocalPutThread {
  return (shared ??= new LocalPutThread())
}
