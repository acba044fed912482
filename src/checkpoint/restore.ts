import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import path from 'node:path'
import pLimit from 'p-limit'
import { ConfigError, TaskpointError } from '../errors.js'
import { CorruptCheckpointError, chunksOf, validateEntryPath, type FileEntry, type Manifest } from '../format/manifest.js'
import type { Storage } from '../storage/types.js'
import type { ChunkCache } from './chunk-cache.js'
import { sharedBytes } from './hash.js'
import { fetchChunk, type ChunkWitness } from './reader.js'

/**
 * The staging directory of a restore (and, from earlier versions, its temporary files): a short
 * name carrying the restoring process's pid, so the next restore can tell a dead process's
 * leftovers from a live one's.
 */
const TEMP_PREFIX = '.tp-restore-'
// The CLI's --clean stages in `.tp-clean-<pid>-<hex>`: a killed one's is swept (and not saved) the same way.
const TEMP_RE = /^\.tp-(?:restore|clean)-(\d+)-[0-9a-f]{8}$/

/** Whether `name` is a restore's staging name: a restore sweeps those of dead processes, so a save leaves them out. */
export function isRestoreStaging(name: string): boolean {
  return TEMP_RE.test(name)
}
/** Small files written synchronously between two turns of the event loop. */
const WRITES_PER_TURN = 256
/**
 * Staging and aside directories of this process's restores in flight. A name with this process's
 * pid that is not here is a leftover of an earlier process with the same pid (in a container the
 * job has the same pid after every restart), so it is swept like any dead process's.
 */
const inFlight = new Set<string>()
const tempName = (): string => {
  const name = `${TEMP_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`
  inFlight.add(name)
  return name
}

export interface RestoreOptions {
  /** Packs and large files restored at once (each holds one chunk buffer, a large file one descriptor). Default 8. */
  concurrency: number
  witness?: ChunkWitness
  /** Local copies of chunks to read before the store (see ChunkCache). */
  cache?: ChunkCache
  onBytes?: (n: number) => void
  /** A directory inside `root` (relative, '/'-separated) that no file of the checkpoint may land in: a local store there. */
  keepOut?: string
}

/** A directory of the checkpoint's tree: its entries by name, `null` for a file. */
type Tree = Map<string, Tree | null>

/**
 * Writes every file of a manifest under `root`, verified chunk by chunk. Everything is written
 * into a staging directory inside `root` first (same file system, so moving is a rename) and moved
 * into place only once all of it verified, so a damaged checkpoint leaves the directory as it was
 * and the caller can fall back to an older one. A subtree that does not exist in `root` yet moves
 * with one rename: restoring into an empty directory costs one rename per top-level entry.
 *
 * Each pack is fetched and verified once, then its files are written with synchronous calls in
 * short bursts (for files of a few KiB a promise per system call costs more than the write). No
 * fsync: a restore is a copy of a checkpoint that stays in the store, and after a crash the job
 * restores again instead of trusting what the crash left in the directory. Descriptors and memory
 * stay bounded by `concurrency` (one chunk buffer each) whatever the number of files.
 */
export async function restoreFiles(storage: Storage, key: string, m: Manifest, root: string, o: RestoreOptions): Promise<string[]> {
  const tree: Tree = new Map()
  for (const f of m.files) {
    const final = path.join(root, ...validateEntryPath(f.path).split('/'))
    if (!final.startsWith(root + path.sep)) throw new CorruptCheckpointError(key, `file ${f.path} would land outside ${root}`)
    if (o.keepOut !== undefined && (f.path === o.keepOut || f.path.startsWith(`${o.keepOut}/`))) {
      throw new ConfigError(
        `cannot restore into ${root}: the checkpoint's ${f.path} would land in the checkpoint store at ${path.join(root, o.keepOut)}; restore into a directory that does not hold the store`,
      )
    }
    addPath(tree, f.path, key)
  }
  const createdRoot = await makeRoot(root)
  sweepDeadTemps(root, tree)
  const stageName = tempName()
  const stage = path.join(root, stageName)
  try {
    await fsp.mkdir(stage, { mode: 0o700 })
  } catch (e) {
    inFlight.delete(stageName)
    throw e
  }
  const dropStage = async (): Promise<void> => {
    await fsp.rm(stage, { recursive: true, force: true })
    inFlight.delete(stageName)
  }
  try {
    await stageFiles(storage, key, m, stage, tree, o)
    // Every conflict is found before anything moves, so a refused restore changes nothing.
    const moves = plan(root, stage, tree, [])
    await placeAll(root, moves)
  } catch (e) {
    await dropStage()
    // Every directory this restore created, deepest first; rmdir stops at one that is not empty.
    if (createdRoot) {
      for (let d = root; d.startsWith(createdRoot); d = path.dirname(d)) {
        const removed = await fsp.rmdir(d).then(
          () => true,
          () => false,
        )
        if (!removed || d === createdRoot) break
      }
    }
    throw e
  }
  // What is left are the directories whose contents were moved into existing ones.
  await dropStage()
  return m.files.map((f) => f.path)
}

function addPath(tree: Tree, p: string, key: string): void {
  const parts = p.split('/')
  let t = tree
  for (const name of parts.slice(0, -1)) {
    let c = t.get(name)
    if (c === undefined) t.set(name, (c = new Map()))
    // Refused by the manifest check already; restated here because it decides what a rename replaces.
    if (c === null) throw new CorruptCheckpointError(key, `${p}: a parent is also a file`)
    t = c
  }
  t.set(parts.at(-1)!, null)
}

/** Creates `root` if needed; the first directory it created (so a failed restore can take them away again). */
async function makeRoot(root: string): Promise<string | undefined> {
  try {
    return await fsp.mkdir(root, { recursive: true })
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'EEXIST' || code === 'ENOTDIR') {
      throw new TaskpointError('RestoreConflict', `cannot restore into ${root}: it or one of its parents exists and is not a directory; move it away or restore elsewhere`)
    }
    throw e
  }
}

/** Writes every file into `stage` (laid out as in the checkpoint), each pack fetched once. */
async function stageFiles(storage: Storage, key: string, m: Manifest, stage: string, tree: Tree, o: RestoreOptions): Promise<void> {
  makeDirs(stage, tree)
  const packs = m.packs ?? []
  const byPack: FileEntry[][] = packs.map(() => [])
  const own: FileEntry[] = []
  for (const f of m.files) {
    if (f.packed) byPack[f.packed.pack]!.push(f)
    else if (f.chunks.length > 0) own.push(f)
    else writeSmall(stage, f, new Uint8Array(0))
  }
  // One buffer per transfer in flight, made once and reused: memory is concurrency x chunk.
  const bufSize = chunksOf(m).reduce((mx, c) => Math.max(mx, c.size), 1)
  const free: Uint8Array[] = []
  const limit = pLimit(o.concurrency)
  const opened: StagedFile[] = []
  let failed = false
  const run = (work: (buf: Uint8Array) => Promise<void>): Promise<void> =>
    limit(async () => {
      if (failed) return
      const buf = free.pop() ?? sharedBytes(bufSize + 1)
      try {
        await work(buf)
      } catch (e) {
        failed = true
        throw e
      } finally {
        free.push(buf)
      }
    })
  const tasks = [
    ...byPack.map((files, i) =>
      run(async (buf) => {
        const p = packs[i]!
        const bytes = await fetchChunk(storage, key, p.hash, p.size, buf, o.witness, o.cache)
        for (let j = 0; j < files.length; j++) {
          const f = files[j]!
          writeSmall(stage, f, bytes.subarray(f.packed!.offset, f.packed!.offset + f.size))
          if ((j + 1) % WRITES_PER_TURN === 0) await new Promise((r) => setImmediate(r))
        }
        o.onBytes?.(p.size)
      }),
    ),
    // A large file's chunks are fetched, verified and written in parallel like everything else,
    // into one descriptor per file that its last chunk closes.
    ...own.flatMap((f) => {
      const file = new StagedFile(stagedPath(stage, f), f.chunks.length, modeOf(f))
      opened.push(file)
      let at = 0
      return f.chunks.map((c) => {
        const offset = at
        at += c.size
        return run(async (buf) => {
          const fh = await file.handle()
          const bytes = await fetchChunk(storage, key, c.hash, c.size, buf, o.witness, o.cache)
          for (let w = 0; w < bytes.byteLength; ) w += (await fh.write(bytes, w, bytes.byteLength - w, offset + w)).bytesWritten
          o.onBytes?.(c.size)
          await file.chunkDone()
        })
      })
    }),
  ]
  // Every task ends before the stage may be removed: none may still be writing into it.
  const settled = await Promise.allSettled(tasks)
  await Promise.all(opened.map((f) => f.close()))
  for (const r of settled) if (r.status === 'rejected') throw r.reason
}

/** One staged file written by several chunk tasks: opened by the first, closed after the last. */
class StagedFile {
  private fh: Promise<fsp.FileHandle> | undefined
  private closed = false

  constructor(
    private readonly file: string,
    private left: number,
    private readonly mode: number,
  ) {}

  handle(): Promise<fsp.FileHandle> {
    this.fh ??= fsp.open(this.file, 'wx', 0o600)
    return this.fh
  }

  async chunkDone(): Promise<void> {
    if (--this.left === 0) {
      await (await this.handle()).chmod(this.mode)
      await this.close()
    }
  }

  /** Idempotent; also releases the descriptor of a file whose restore failed half way. */
  async close(): Promise<void> {
    if (this.closed || !this.fh) return
    this.closed = true
    await (await this.fh.catch(() => undefined))?.close()
  }
}

function makeDirs(base: string, tree: Tree): void {
  for (const [name, child] of tree) {
    if (!child) continue
    const dir = path.join(base, name)
    fs.mkdirSync(dir)
    makeDirs(dir, child)
  }
}

function stagedPath(stage: string, f: FileEntry): string {
  return path.join(stage, ...f.path.split('/'))
}

/** Permission bits only: setuid, setgid and sticky bits from a checkpoint are never restored. */
const modeOf = (f: FileEntry): number => (f.mode ?? 0o644) & 0o777

function writeSmall(stage: string, f: FileEntry, bytes: Uint8Array): void {
  const fd = fs.openSync(stagedPath(stage, f), 'wx', 0o600)
  try {
    for (let w = 0; w < bytes.byteLength; ) w += fs.writeSync(fd, bytes, w, bytes.byteLength - w, w)
    fs.fchmodSync(fd, modeOf(f))
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * The renames that put the staged tree in place: a whole subtree where `root` has nothing of that
 * name, file by file into directories that exist. Anything in the way (a directory where a file
 * goes, a file or symlink where a directory goes: a restore never writes through a link) is a
 * conflict, found before anything moves.
 */
function plan(root: string, stage: string, tree: Tree, rel: string[]): [string, string][] {
  const moves: [string, string][] = []
  for (const [name, child] of tree) {
    const target = path.join(root, ...rel, name)
    const from = path.join(stage, ...rel, name)
    const st = fs.lstatSync(target, { throwIfNoEntry: false })
    if (!st) moves.push([from, target])
    else if (child) {
      if (!st.isDirectory()) throw conflict(target, 'it is not a directory (a file or a link) where the checkpoint has a directory')
      moves.push(...plan(root, stage, child, [...rel, name]))
    } else {
      if (st.isDirectory()) throw conflict(target, 'a directory is in the way')
      moves.push([from, target])
    }
  }
  return moves
}

function conflict(target: string, why: string): TaskpointError {
  return new TaskpointError('RestoreConflict', `cannot restore ${target}: ${why}; move it away or restore elsewhere`)
}

/**
 * Makes the moves, or none of them: a file being replaced is first moved aside into a directory of
 * its own (named like a staging directory, so a killed restore's is swept), and should a move fail
 * (a permission, a read-only or immutable file, something appearing in the way) every move made is
 * taken back and every replaced file put back where it was.
 */
async function placeAll(root: string, moves: [string, string][]): Promise<void> {
  let aside: string | undefined
  let asideName: string | undefined
  const done: { from: string; to: string; old?: string }[] = []
  try {
    for (const [from, to] of moves) {
      const step: { from: string; to: string; old?: string } = { from, to }
      if (fs.lstatSync(to, { throwIfNoEntry: false })) {
        if (!aside) {
          asideName = tempName()
          aside = path.join(root, asideName)
          fs.mkdirSync(aside, { mode: 0o700 })
        }
        step.old = path.join(aside, String(done.length))
        place(to, step.old)
      }
      done.push(step)
      place(from, to)
    }
  } catch (e) {
    for (const d of done.reverse()) {
      try {
        if (fs.lstatSync(d.from, { throwIfNoEntry: false }) === undefined && fs.lstatSync(d.to, { throwIfNoEntry: false })) fs.renameSync(d.to, d.from)
        if (d.old) fs.renameSync(d.old, d.to)
      } catch {
        // Best effort: what cannot be put back stays in the aside directory, never deleted below.
        aside = undefined
      }
    }
    throw e
  } finally {
    if (aside) await fsp.rm(aside, { recursive: true, force: true })
    if (asideName) inFlight.delete(asideName)
  }
}

function place(from: string, to: string): void {
  try {
    fs.renameSync(from, to)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    // Something appeared in the way since the plan was made.
    if (code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR') throw conflict(to, 'something is in the way')
    throw e
  }
}

/** Removes what killed restores left in `root` and in the directories this restore writes to. */
function sweepDeadTemps(root: string, tree: Tree): void {
  const sweep = (dir: string, t: Tree): void => {
    let names: string[]
    try {
      names = fs.readdirSync(dir)
    } catch {
      return // not there (yet): nothing to sweep, nor below it
    }
    for (const n of names) {
      const m = TEMP_RE.exec(n)
      if (m && !(Number(m[1]) === process.pid ? inFlight.has(n) : alive(Number(m[1])))) fs.rmSync(path.join(dir, n), { recursive: true, force: true })
    }
    // Only into real directories: a link in the target (refused by the plan later) may point anywhere.
    for (const [name, child] of t) if (child && fs.lstatSync(path.join(dir, name), { throwIfNoEntry: false })?.isDirectory()) sweep(path.join(dir, name), child)
  }
  sweep(root, tree)
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}
