import { TaskpointError } from '../errors.js'
import { STATE_FILE, dtypeBytes, validateEntryPath, type ArrayEntry, type CheckpointKind, type DType } from '../format/manifest.js'
import type { PendingEntry } from './commit.js'
import { sharedBytes } from './hash.js'
import type { ArrayInput, StateInput, WriteOptions } from './types.js'

/** What one write commits: entries (in the caller's memory, a pooled copy, or files on disk). */
export interface Snapshot {
  kind: CheckpointKind
  entries: PendingEntry[]
  json?: unknown
  options: WriteOptions
  /** The pooled buffer the entries live in, given back to the pool once committed. */
  buffer?: Uint8Array
}

/**
 * Checks what a write will store before it is accepted, so that nothing is refused after the
 * caller was told it would be written (a background commit has nobody left to tell).
 */
export function checkWriteOptions(options: WriteOptions): WriteOptions {
  if (options.step !== undefined && (!Number.isSafeInteger(options.step) || options.step < 0)) {
    throw new TaskpointError('InvalidOption', `step must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER}, got ${String(options.step)}`)
  }
  const out: WriteOptions = {}
  if (options.step !== undefined) out.step = options.step
  if (options.metadata !== undefined) {
    if (options.metadata === null || typeof options.metadata !== 'object' || Array.isArray(options.metadata)) {
      throw new TaskpointError('InvalidOption', 'metadata must be a plain object of JSON values')
    }
    out.metadata = jsonCopy(options.metadata, 'metadata') as Record<string, unknown>
  }
  return out
}

/** A deep copy through JSON: what is stored is exactly what a reader will get back. */
export function jsonCopy(v: unknown, what: string): unknown {
  let text: string | undefined
  try {
    text = JSON.stringify(v)
  } catch (e) {
    throw new TaskpointError('InvalidOption', `${what} cannot be stored as JSON: ${(e as Error).message}`)
  }
  if (text === undefined) throw new TaskpointError('InvalidOption', `${what} cannot be stored as JSON (a function or undefined)`)
  return JSON.parse(text)
}

function toBytes(v: ArrayBufferView): Uint8Array {
  return v instanceof Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
}

function dtypeOf(v: ArrayBufferView): DType {
  if (v instanceof Float32Array) return 'float32'
  if (v instanceof Int32Array) return 'int32'
  if (v instanceof Float64Array) return 'float64'
  if (v instanceof Int8Array) return 'int8'
  if (v instanceof Int16Array) return 'int16'
  if (v instanceof Uint16Array) return 'uint16'
  if (v instanceof Uint32Array) return 'uint32'
  if (v instanceof Uint8Array) return 'uint8'
  return 'bytes'
}

/** Turns user input into entries pointing at the caller's memory (no copy yet). */
export function describe(data: ArrayBufferView | StateInput, options: WriteOptions): Snapshot {
  if (ArrayBuffer.isView(data)) {
    const bytes = toBytes(data)
    return { kind: 'bytes', entries: [{ path: 'data', size: bytes.byteLength, source: bytes }], options }
  }
  if (!data || typeof data !== 'object' || typeof data.arrays !== 'object' || data.arrays === null) {
    throw new TypeError('write() takes bytes (a TypedArray/Buffer) or { arrays: { name: TypedArray }, json?: any }')
  }
  const entries: PendingEntry[] = Object.entries(data.arrays).map(([name, a]) => {
    const input: ArrayInput = ArrayBuffer.isView(a) ? { data: a } : a
    if (!input || !ArrayBuffer.isView(input.data)) throw new TypeError(`array "${name}" is not a TypedArray (or { data: TypedArray })`)
    const bytes = toBytes(input.data)
    const dtype = input.dtype ?? dtypeOf(input.data)
    // readState() gives arrays back as typed arrays of this dtype: the bytes must hold whole elements.
    if (bytes.byteLength % dtypeBytes(dtype) !== 0) throw new TypeError(`array "${name}" has ${bytes.byteLength} bytes, not a whole number of ${dtype} elements`)
    const e: PendingEntry = { path: validateEntryPath(name), size: bytes.byteLength, dtype, source: bytes }
    if (input.shape) e.shape = [...input.shape]
    return e
  })
  const snap: Snapshot = { kind: 'state', entries, options }
  if (data.json !== undefined) snap.json = jsonCopy(data.json, 'json')
  return snap
}

/**
 * At most two snapshot buffers exist at any time (one being committed, one waiting), whatever the
 * pattern of sizes: a buffer that is too small is dropped before a larger one is made, and the
 * smallest buffer that fits is reused (a warm buffer copies ~50x faster than fresh pages).
 */
export class BufferPool {
  private free: Uint8Array[] = []

  constructor(private readonly max = 2) {}

  /** A buffer of at least `size` bytes (the whole buffer; take a subarray). */
  take(size: number): Uint8Array {
    let best = -1
    for (let i = 0; i < this.free.length; i++) {
      const b = this.free[i]!
      if (b.byteLength >= size && (best < 0 || b.byteLength < this.free[best]!.byteLength)) best = i
    }
    if (best >= 0) return this.free.splice(best, 1)[0]!
    // None fits: the spares are dropped, so the new buffer never adds to the count.
    this.free = []
    return sharedBytes(size)
  }

  give(buf: Uint8Array | undefined): void {
    if (!buf) return
    this.free.push(buf)
    while (this.free.length > this.max - 1) this.free.sort((a, b) => a.byteLength - b.byteLength).shift()
  }

  clear(): void {
    this.free = []
  }
}

/** Copies the described entries into `buffer` back to back; entries then point into it. */
export function copyInto(snap: Snapshot, buffer: Uint8Array): void {
  const dst = Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength)
  let off = 0
  for (const e of snap.entries) {
    const src = e.source as Uint8Array
    // Buffer#copy is a memmove; TypedArray#set into shared memory is several times slower.
    Buffer.from(src.buffer, src.byteOffset, src.byteLength).copy(dst, off)
    e.source = buffer.subarray(off, off + e.size)
    off += e.size
  }
  snap.buffer = buffer
}

export function snapshotSize(snap: Snapshot): number {
  return snap.entries.reduce((s, e) => s + e.size, 0)
}

/**
 * Lays the arrays of a state checkpoint back to back in one file. Snapshots already hold them
 * contiguously in one buffer, which is then used as is; anything else is copied together once.
 */
export function packState(entries: PendingEntry[]): { entries: PendingEntry[]; arrays: ArrayEntry[] } {
  const arrays: ArrayEntry[] = []
  let offset = 0
  for (const e of entries) {
    const a: ArrayEntry = { name: e.path, dtype: e.dtype ?? 'bytes', offset, size: e.size }
    if (e.shape) a.shape = e.shape
    arrays.push(a)
    offset += e.size
  }
  const views = entries.map((e) => e.source as Uint8Array)
  const first = views[0]
  const contiguous = first !== undefined && views.every((v, i) => v.buffer === first.buffer && v.byteOffset === first.byteOffset + arrays[i]!.offset)
  let bytes: Uint8Array
  if (contiguous) bytes = new Uint8Array(first.buffer, first.byteOffset, offset)
  else {
    bytes = sharedBytes(offset)
    views.forEach((v, i) => bytes.set(v, arrays[i]!.offset))
  }
  return { entries: [{ path: STATE_FILE, size: offset, source: bytes }], arrays }
}
