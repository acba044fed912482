import { ConfigError } from '../errors.js'
import { STATE_FILE, arrayProblem, dtypeBytes, validateEntryPath, type ArrayEntry, type CheckpointKind, type DType, type Manifest } from '../format/manifest.js'
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
    throw new ConfigError(`step must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER}, got ${String(options.step)}`)
  }
  const out: WriteOptions = {}
  if (options.step !== undefined) out.step = options.step
  if (options.metadata !== undefined) {
    if (options.metadata === null || typeof options.metadata !== 'object' || Array.isArray(options.metadata)) {
      throw new ConfigError('metadata must be a plain object of JSON values')
    }
    const copy = jsonCopy(options.metadata, 'metadata')
    // An object whose toJSON gives something else (a Date gives a string) is stored as that.
    if (copy === null || typeof copy !== 'object' || Array.isArray(copy))
      throw new ConfigError('metadata must be a plain object of JSON values; as JSON it is not an object (a Date, or a toJSON that returns something else)')
    out.metadata = copy as Record<string, unknown>
  }
  return out
}

/** A deep copy through JSON: what is stored is exactly what a reader will get back. */
export function jsonCopy(v: unknown, what: string): unknown {
  let text: string | undefined
  try {
    text = JSON.stringify(v)
  } catch (e) {
    throw new ConfigError(`${what} cannot be stored as JSON: ${(e as Error).message}`)
  }
  if (text === undefined) throw new ConfigError(`${what} cannot be stored as JSON (a function or undefined)`)
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
    throw new ConfigError('write() takes bytes (a TypedArray/Buffer) or { arrays: { name: TypedArray }, json?: any }')
  }
  const entries: PendingEntry[] = Object.entries(data.arrays).map(([name, a]) => {
    const input: ArrayInput = ArrayBuffer.isView(a) ? { data: a } : a
    if (!input || !ArrayBuffer.isView(input.data)) throw new ConfigError(`array "${name}" is not a TypedArray (or { data: TypedArray })`)
    const bytes = toBytes(input.data)
    // A typed array of elements no dtype names (64-bit integers, float16) would come back as bytes.
    const width = (input.data as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1
    if (input.dtype === undefined && dtypeOf(input.data) === 'bytes' && width > 1) {
      throw new ConfigError(
        `array "${name}" is a ${input.data.constructor.name}, which state checkpoints have no dtype for: pass { data, dtype: 'bytes' } to store its bytes, or convert it`,
      )
    }
    const dtype = input.dtype ?? dtypeOf(input.data)
    // What readers would refuse is refused here, at the call (a background commit has nobody to tell).
    const problem = arrayProblem(dtype, input.shape, bytes.byteLength)
    if (problem) throw new ConfigError(`array "${name}" ${problem}`)
    // readState() gives arrays back as typed arrays of this dtype: the bytes must hold whole elements.
    if (bytes.byteLength % dtypeBytes(dtype) !== 0) throw new ConfigError(`array "${name}" has ${bytes.byteLength} bytes, not a whole number of ${dtype} elements`)
    const e: PendingEntry = { path: validateEntryPath(name), size: bytes.byteLength, dtype, source: bytes }
    if (input.shape) e.shape = [...input.shape]
    return e
  })
  const snap: Snapshot = { kind: 'state', entries, options }
  if (data.json !== undefined) snap.json = jsonCopy(data.json, 'json')
  return snap
}

/** Largest growable SharedArrayBuffer V8 makes here (Node 20-24). */
const GROWABLE_MAX = 2 ** 32

/** ES2024's growable SharedArrayBuffer (Node >= 20), typed here to keep the ES2023 lib setting. */
interface Growable extends SharedArrayBuffer {
  readonly growable: boolean
  readonly maxByteLength: number
  grow(size: number): void
}
const GrowableSAB = SharedArrayBuffer as unknown as new (size: number, o: { maxByteLength: number }) => Growable

/**
 * Snapshot buffers. At most two exist at any time (one being committed, one waiting), whatever the
 * pattern of sizes. Each is a growable SharedArrayBuffer: it reserves address space once and grows
 * in place, so a state that grows or varies in size reuses the same memory instead of leaving
 * dropped buffers behind for the garbage collector (which does not count shared memory as pressure:
 * a loop over growing states reached 3 GB that way). A warm buffer also copies ~50x faster than
 * fresh pages.
 */
export class BufferPool {
  private free: Uint8Array[] = []
  private inUse = 0

  constructor(private readonly max = 2) {}

  /** A buffer of at least `size` bytes (the whole buffer; take a subarray). Give it back when done. */
  take(size: number): Uint8Array {
    this.inUse++
    const fits = this.free.findIndex((b) => capacity(b) >= size)
    if (fits >= 0) return grown(this.free.splice(fits, 1)[0]!, size)
    // None fits: spares go first, so the new buffer never adds to the count.
    this.free = []
    if (size <= GROWABLE_MAX) return grown(new Uint8Array(new GrowableSAB(0, { maxByteLength: GROWABLE_MAX })), size)
    return sharedBytes(size)
  }

  give(buf: Uint8Array | undefined): void {
    if (!buf) return
    this.inUse = Math.max(0, this.inUse - 1)
    this.free.push(buf)
    // Spares are kept only while buffers in use plus spares stay within the bound.
    while (this.free.length > 0 && this.free.length + this.inUse > this.max) this.free.shift()
  }

  clear(): void {
    this.free = []
  }
}

function capacity(b: Uint8Array): number {
  const sab = b.buffer as Growable
  return sab.growable ? sab.maxByteLength : sab.byteLength
}

/** The buffer, grown to hold `size` bytes, as a view of all of it. */
function grown(b: Uint8Array, size: number): Uint8Array {
  const sab = b.buffer as Growable
  if (sab.byteLength < size) sab.grow(size)
  return new Uint8Array(sab, 0, sab.byteLength)
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

/**
 * Points each entry at a reader that copies from the caller's memory, chunk by chunk, into the
 * commit's chunk buffers: for `write()`, whose caller waits anyway, instead of a whole snapshot
 * copied up front (a fresh process's first save paid for faulting in a buffer the size of the
 * state). Every chunk is hashed and stored from its own copy, so a caller who changes `data` during
 * the write (which write() forbids) gets a checkpoint mixing old and new bytes, never a chunk
 * stored under another content's id; a buffer detached or shrunk meanwhile fails the write.
 */
export function readFromCaller(snap: Snapshot): void {
  for (const e of snap.entries) {
    const src = e.source as Uint8Array
    const from = Buffer.from(src.buffer, src.byteOffset, src.byteLength)
    // Buffer#copy is a memmove into shared memory. Past the source's (current) end: 0 bytes, "shrank".
    e.source = async (buf, offset) => {
      const end = Math.min(e.size, offset + buf.byteLength, from.length)
      return end > offset ? from.copy(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength), 0, offset, end) : 0
    }
  }
}

export function snapshotSize(snap: Snapshot): number {
  return snap.entries.reduce((s, e) => s + e.size, 0)
}

/**
 * Lays the arrays of a state checkpoint back to back in one file. Snapshots already hold them
 * contiguously in one buffer, which is then used as is; anything else is read array by array as
 * the chunks of that file are cut (no copy of the whole state).
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
  const size = offset
  const first = entries[0]?.source
  const contiguous =
    first instanceof Uint8Array &&
    entries.every((e, i) => e.source instanceof Uint8Array && e.source.buffer === first.buffer && e.source.byteOffset === first.byteOffset + arrays[i]!.offset)
  if (contiguous) return { entries: [{ path: STATE_FILE, size, source: new Uint8Array(first.buffer, first.byteOffset, size) }], arrays }
  const sized: PendingEntry[] = []
  const starts: number[] = []
  entries.forEach((e, i) => {
    if (e.size > 0) sized.push(e), starts.push(arrays[i]!.offset)
  })
  const source = async (buf: Uint8Array, at: number): Promise<number> => {
    // The array holding byte `at` (the last one starting at or before it), then as much of it as fits.
    let lo = 0
    let hi = starts.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (starts[mid]! <= at) lo = mid
      else hi = mid - 1
    }
    const e = sized[lo]
    if (!e || at >= size) return 0
    const within = at - starts[lo]!
    const want = Math.min(buf.byteLength, e.size - within)
    if (e.source instanceof Uint8Array) {
      buf.set(e.source.subarray(within, within + want))
      return want
    }
    return e.source(buf.subarray(0, want), within)
  }
  return { entries: [{ path: STATE_FILE, size, source }], arrays }
}

/** The entries of a checkpoint read back into memory, ready to be committed elsewhere as they were. */
export function entriesOf(m: Manifest, files: Map<string, Uint8Array>): PendingEntry[] {
  const packed = files.get(STATE_FILE)
  if (m.kind === 'state' && packed) {
    return (m.arrays ?? []).map((a) => ({
      path: a.name,
      size: a.size,
      dtype: a.dtype,
      ...(a.shape ? { shape: a.shape } : {}),
      source: packed.subarray(a.offset, a.offset + a.size),
    }))
  }
  return m.files.map((f) => {
    const e: PendingEntry = { path: f.path, size: f.size, source: files.get(f.path)! }
    if (f.mode !== undefined) e.mode = f.mode
    return e
  })
}
