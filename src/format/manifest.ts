import { createHash } from 'node:crypto'
import { TaskpointError } from '../errors.js'
import { validateKey } from '../storage/keys.js'

/**
 * The format this version writes; bumped on any change a reader of the previous version could
 * misread. Format 1: sha256 chunk ids. Format 2 adds BLAKE3 chunk ids (`b3-<hex>`) and small files
 * packed together into shared chunks. Every format up to this one stays readable.
 */
export const FORMAT_VERSION = 2

export const MANIFEST_DIR = 'manifests/'
export const CHUNK_DIR = 'chunks/'
export const WRITER_DIR = 'writers/'

export interface ChunkRef {
  /**
   * The chunk's content id: its hash, which names the algorithm. `b3-<64 hex>` is BLAKE3-256
   * (format 2); a bare `<64 hex>` is sha256 (format 1, still read and still written where the
   * native BLAKE3 module cannot load).
   */
  hash: string
  size: number
}

export type DType = 'float32' | 'int32' | 'bool' | 'uint8' | 'float64' | 'int8' | 'int16' | 'uint16' | 'uint32' | 'bytes'

export interface FileEntry {
  /** Relative '/'-separated path (directory saves) or array name (state saves). */
  path: string
  size: number
  /** POSIX permission bits for files saved from disk. */
  mode?: number
  /** For arrays of a state checkpoint. */
  dtype?: DType
  shape?: number[]
  /** The file's own chunks, in order; empty for an empty file and for a packed one. */
  chunks: ChunkRef[]
  /**
   * Format >= 2, small files only: the file's bytes are `[offset, offset + size)` of the pack
   * `packs[pack]` of its manifest (and `chunks` is empty).
   */
  packed?: PackedRef
}

/** Where a packed file lies: a pack of the manifest (an index into `packs`) and an offset inside it. */
export interface PackedRef {
  pack: number
  offset: number
}

export type CheckpointKind = 'bytes' | 'files' | 'state'

/** The one file of a state checkpoint: every array back to back, so a small model is one chunk. */
export const STATE_FILE = 'state.bin'

/** Where one named array of a state checkpoint lies inside STATE_FILE. */
export interface ArrayEntry {
  name: string
  dtype: DType
  shape?: number[]
  offset: number
  size: number
}

export interface Manifest {
  /** 1 or 2 (see FORMAT_VERSION): what a writer of that format wrote. */
  format: number
  kind: CheckpointKind
  /** Commit order within a writer epoch; together with `epoch` it orders all checkpoints. */
  seq: number
  /** Fencing epoch of the writer; a newer attempt always has a higher epoch. */
  epoch: number
  writer: string
  attempt?: number
  step: number
  createdAt: string
  chunkSize: number
  totalSize: number
  metadata: Record<string, unknown>
  repro: Record<string, unknown>
  files: FileEntry[]
  /**
   * Format >= 2: shared chunks holding small files back to back (see FileEntry.packed). The files
   * packed into each one tile it exactly: no gap, no overlap.
   */
  packs?: ChunkRef[]
  /** For state checkpoints: the JSON part, stored inline (it is small and wants no extra object). */
  json?: unknown
  /** For state checkpoints: the arrays inside STATE_FILE. */
  arrays?: ArrayEntry[]
}

export class CorruptCheckpointError extends TaskpointError {
  constructor(
    readonly key: string,
    readonly reason: string,
    /** The manifest itself is gone (deleted by retention meanwhile), as opposed to present but damaged. */
    readonly vanished = false,
  ) {
    super('CorruptCheckpoint', `checkpoint ${key} is unusable: ${reason}. It is skipped; run \`taskpoint verify\` to see the damage`)
  }
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** The prefix of a BLAKE3 chunk id (format 2); a sha256 id is the bare digest (format 1). */
export const BLAKE3_ID_PREFIX = 'b3-'

/** A sha256 chunk id, the only kind format 1 knows. */
export const SHA256_ID = /^[0-9a-f]{64}$/

/** A chunk id of either algorithm (see ChunkRef.hash). */
export const CHUNK_ID = /^(?:b3-)?[0-9a-f]{64}$/

export function isBlake3Id(id: string): boolean {
  return id.startsWith(BLAKE3_ID_PREFIX)
}

/** The hex digest inside a chunk id. */
export function chunkDigest(id: string): string {
  return isBlake3Id(id) ? id.slice(BLAKE3_ID_PREFIX.length) : id
}

/** `chunks/ab/abcdef…` or `chunks/ab/b3-abcdef…`: a two-character fan-out of the digest keeps local directories small. */
export function chunkKey(hash: string): string {
  return `${CHUNK_DIR}${chunkDigest(hash).slice(0, 2)}/${hash}`
}

export function chunkHashFromKey(key: string): string | undefined {
  const m = /^chunks\/([0-9a-f]{2})\/((?:b3-)?([0-9a-f]{64}))$/.exec(key)
  return m && m[3]!.startsWith(m[1]!) ? m[2] : undefined
}

/** One chunk a manifest references, with the files whose bytes lie (partly) in it. */
export interface ChunkUse extends ChunkRef {
  paths: string[]
}

/**
 * Every chunk a manifest references, each (hash, size) pair once: the chunks of its files and its
 * packs. The one place that knows where a manifest names chunks: garbage collection, verification,
 * the writer's ledger and the tools all walk chunk references through it, so none can miss a kind.
 */
export function chunksOf(m: Pick<Manifest, 'files' | 'packs'>): ChunkUse[] {
  const byKey = new Map<string, ChunkUse>()
  const useOf = (c: ChunkRef): ChunkUse => {
    const k = `${c.hash}:${c.size}`
    let u = byKey.get(k)
    if (!u) byKey.set(k, (u = { hash: c.hash, size: c.size, paths: [] }))
    return u
  }
  // Every listed pack, even one no file cites (a checked manifest has none; a damaged one may).
  const packs = (m.packs ?? []).map(useOf)
  for (const f of m.files) {
    for (const c of f.chunks) {
      const u = useOf(c)
      if (u.paths.at(-1) !== f.path) u.paths.push(f.path)
    }
    if (f.packed) packs[f.packed.pack]?.paths.push(f.path)
  }
  return [...byKey.values()]
}

export interface ManifestName {
  key: string
  epoch: number
  seq: number
  step: number
  writer: string
}

const pad = (n: number, w: number): string => String(n).padStart(w, '0')

/** Writer ids: short, lowercase, and safe inside a key. */
export const WRITER_ID = /^[0-9a-z]{1,40}$/

/**
 * Manifest keys name a checkpoint by epoch, seq, writer id and step. The numbers are padded to a
 * minimum width (8, 12, 12 digits: what format 1 always wrote, so older locations keep their names)
 * and may grow up to 16 digits, enough for every safe integer (2^53 - 1 has 16 digits). Readers
 * order names by their parsed numbers, never as strings, so a wider number sorts where it belongs.
 * A key is unique per writer, so two writers never write the same key even on stores without
 * create-if-absent; ties between writers of one epoch are broken by writer id, deterministically.
 *
 * Key layout 2 (this release) puts each name in a group of MANIFEST_GROUP seqs of one epoch:
 * `manifests/<epoch>-<seq / 100>/<epoch>-<seq>-<writer>-s<step>.tpm`. A local directory is listed
 * whole, so with one flat directory every listing cost a readdir of the entire history; grouped,
 * a listing that starts after a recent key reads the (short) list of groups and the groups from
 * that key on. Object stores list keys, not directories, and are indifferent. Layout 1, the flat
 * `manifests/<epoch>-<seq>-<writer>-s<step>.tpm` of earlier releases, is still read everywhere.
 */
export function manifestKey(m: Pick<Manifest, 'epoch' | 'seq' | 'step' | 'writer'>): string {
  return `${MANIFEST_DIR}${groupOf(m.epoch, m.seq)}/${leafName(m)}`
}

/** Seqs per group directory: a listing from a recent key reads at most this many names of its group. */
export const MANIFEST_GROUP = 100

const groupOf = (epoch: number, seq: number): string => `${pad(epoch, 8)}-${pad(Math.floor(seq / MANIFEST_GROUP), 10)}`

function leafName(m: Pick<Manifest, 'epoch' | 'seq' | 'step' | 'writer'>): string {
  for (const [field, v] of [
    ['epoch', m.epoch],
    ['seq', m.seq],
    ['step', m.step],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`manifest ${field} must be a safe whole number >= 0, got ${v}`)
  }
  if (!WRITER_ID.test(m.writer)) throw new RangeError(`writer id must be 1-40 characters of [0-9a-z], got ${JSON.stringify(m.writer)}`)
  return `${pad(m.epoch, 8)}-${pad(m.seq, 12)}-${m.writer}-s${pad(m.step, 12)}.tpm`
}

const KEY_RE = /^manifests\/(?:\d{8,16}-\d{10,16}\/)?(\d{8,16})-(\d{12,16})-([0-9a-z]{1,40})-s(\d{12,16})\.tpm$/

/** The parts of a manifest key (either layout), or undefined when the key is not one this version can read. */
export function parseManifestKey(key: string): ManifestName | undefined {
  const m = KEY_RE.exec(key)
  if (!m) return undefined
  const [epoch, seq, step] = [Number(m[1]), Number(m[2]), Number(m[4])]
  // Past 2^53 - 1 a number no longer round-trips: such a key cannot be ordered or trusted.
  if (![epoch, seq, step].every(Number.isSafeInteger)) return undefined
  const name = { key, epoch, seq, writer: m[3]!, step }
  // Only the spellings a writer produces: "000000005" for epoch 5, or a name in another group's
  // directory, would sort apart from its numbers, and listings that start after a known key rely
  // on byte order (see sortsInKeyOrder).
  return manifestKey(name) === key || `${MANIFEST_DIR}${leafName(name)}` === key ? name : undefined
}

/**
 * Bounds under which keys sort, byte for byte, in the order of their (epoch, seq): padded numbers
 * start with '0', while a wider number (more digits than the padding) starts with '1'-'9' and so
 * sorts after it. Past these bounds (10 million writer epochs, 100 billion commits in one epoch:
 * reachable only through forged objects) a reader lists everything instead.
 */
export const ORDERED_EPOCH_LIMIT = 10_000_000
export const ORDERED_SEQ_LIMIT = 100_000_000_000

export function sortsInKeyOrder(n: Pick<ManifestName, 'epoch' | 'seq'>): boolean {
  return n.epoch < ORDERED_EPOCH_LIMIT && n.seq < ORDERED_SEQ_LIMIT
}

/**
 * A key to list after (`startAfter`) to see every manifest of (epoch, seq or later), in both
 * layouts, while skipping what is older: `manifests/<epoch>-<seq / 100>/<epoch>-<seq>`. A grouped
 * name of (epoch, seq or later) starts with it or differs from it first in a larger digit; a flat
 * name of the same group continues the seq's digits where this has '/', and digits sort after '/'
 * (so every flat name of the group is listed, older ones too: callers filter); every name of an
 * earlier group or epoch differs from it first in a smaller digit. Only for names within
 * sortsInKeyOrder.
 */
export function listingStartFor(n: Pick<ManifestName, 'epoch' | 'seq'>): string {
  return `${MANIFEST_DIR}${groupOf(n.epoch, n.seq)}/${pad(n.epoch, 8)}-${pad(n.seq, 12)}`
}

/** `writers/<epoch:8+>-<writer>.json`: the fencing marker of one writer. */
export function writerMarkerKey(epoch: number, writer: string): string {
  return `${WRITER_DIR}${pad(epoch, 8)}-${writer}.json`
}

/** The epoch and writer of a marker key, or undefined for any other spelling. */
export function parseWriterMarker(key: string): { epoch: number; writer: string } | undefined {
  const m = /^writers\/(\d{8,16})-([0-9a-z]{1,40})\.json$/.exec(key)
  if (!m) return undefined
  const epoch = Number(m[1])
  if (!Number.isSafeInteger(epoch) || writerMarkerKey(epoch, m[2]!) !== key) return undefined
  return { epoch, writer: m[2]! }
}

export function compareNames(a: ManifestName, b: ManifestName): number {
  return a.epoch - b.epoch || a.seq - b.seq || (a.writer < b.writer ? -1 : a.writer > b.writer ? 1 : 0)
}

/** Every object under manifests/ that looks like a manifest (ends in .tpm), readable or not. */
export function isManifestLike(key: string): boolean {
  return key.startsWith(MANIFEST_DIR) && key.endsWith('.tpm')
}

/** Header line `TPM<format> <sha256 of body>` then the JSON body: a flipped bit anywhere is caught. */
export function encodeManifest(m: Manifest): Uint8Array {
  const body = Buffer.from(JSON.stringify(m))
  return Buffer.concat([Buffer.from(`TPM${m.format} ${sha256Hex(body)}\n`), body])
}

export function decodeManifest(key: string, bytes: Uint8Array): Manifest {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const nl = buf.indexOf(10)
  if (nl < 0) throw new CorruptCheckpointError(key, 'manifest has no header line (truncated?)')
  const header = buf.subarray(0, nl).toString('latin1')
  const m = /^TPM(\d+) ([0-9a-f]{64})$/.exec(header)
  if (!m) throw new CorruptCheckpointError(key, 'manifest header is damaged')
  const version = Number(m[1])
  const body = buf.subarray(nl + 1)
  // The checksum covers the body, not the header's format digit: one flipped bit turns TPM2 into
  // TPM3. A newer format is believed only when the intact body says so too; anything else is damage
  // (a reader falls back past it), never an UnsupportedFormat that stops every reader and gc.
  if (sha256Hex(body) !== m[2]) throw new CorruptCheckpointError(key, 'manifest checksum mismatch (truncated or altered)')
  let parsed: Manifest
  try {
    parsed = JSON.parse(body.toString('utf8')) as Manifest
  } catch {
    throw new CorruptCheckpointError(key, 'manifest body is not JSON')
  }
  if (version > FORMAT_VERSION) {
    const said = parsed && typeof parsed === 'object' ? (parsed as { format?: unknown }).format : undefined
    if (said !== version) throw new CorruptCheckpointError(key, `manifest header says format ${m[1]}, its body ${JSON.stringify(said)}`)
    throw new TaskpointError('UnsupportedFormat', `checkpoint ${key} has format ${m[1]}, newer than this taskpoint reads (${FORMAT_VERSION}): upgrade taskpoint`)
  }
  checkManifestShape(key, parsed, version)
  return parsed
}

/** Largest chunk size a manifest may declare: a reader allocates buffers of this size. */
export const MAX_CHUNK_SIZE = 1024 * 1024 * 1024
const KINDS: readonly string[] = ['bytes', 'files', 'state']
const DTYPE_BYTES: Record<DType, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, float64: 8, int8: 1, int16: 2, uint16: 2, uint32: 4, bytes: 1 }

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0

/**
 * Everything a reader relies on is checked before a manifest is used: numbers in range and adding
 * up, paths unique and unable to collide on disk, and the body agreeing with the key it is stored
 * under (a valid manifest copied over another checkpoint's name is damage, not that checkpoint).
 */
function checkManifestShape(key: string, m: Manifest, version: number): void {
  const bad = (why: string): never => {
    throw new CorruptCheckpointError(key, `manifest is malformed: ${why}`)
  }
  if (!m || typeof m !== 'object' || Array.isArray(m)) bad('not an object')
  if (version < 1 || m.format !== version) bad(`format ${String(m.format)} in a format-${version} header`)
  // Format 1 readers know only sha256: a BLAKE3 id in a format-1 manifest is a forgery or damage.
  const chunkId = version >= 2 ? CHUNK_ID : SHA256_ID
  if (!KINDS.includes(m.kind)) bad(`unknown kind ${JSON.stringify(m.kind)}`)
  for (const f of ['epoch', 'seq', 'step'] as const) if (!isCount(m[f])) bad(`${f} is not a whole number >= 0`)
  if (m.attempt !== undefined && !isCount(m.attempt)) bad('attempt is not a whole number >= 0')
  if (typeof m.writer !== 'string' || !WRITER_ID.test(m.writer)) bad('bad writer id')
  const name = parseManifestKey(key)
  if (!name) bad('it is stored under a name that is not a manifest name')
  if (name && (name.epoch !== m.epoch || name.seq !== m.seq || name.writer !== m.writer || name.step !== m.step)) {
    bad(`its body (epoch ${m.epoch}, seq ${m.seq}, writer ${m.writer}, step ${m.step}) belongs to another checkpoint than its name`)
  }
  if (typeof m.createdAt !== 'string' || Number.isNaN(Date.parse(m.createdAt))) bad('bad creation time')
  if (!isCount(m.chunkSize) || m.chunkSize < 1 || m.chunkSize > MAX_CHUNK_SIZE) bad(`chunk size ${String(m.chunkSize)} out of range`)
  if (!isCount(m.totalSize)) bad('bad total size')
  if (m.metadata === null || typeof m.metadata !== 'object' || Array.isArray(m.metadata)) bad('metadata is not an object')
  if (!Array.isArray(m.files)) bad('no file list')
  const packs = checkPacks(m, version, chunkId, bad)
  // Per pack, the [offset, end) spans of its files: they must tile it exactly.
  const spans: [number, number][][] = packs.map(() => [])
  const paths = new Set<string>()
  let total = 0
  for (const f of m.files) {
    if (!f || typeof f !== 'object' || typeof f.path !== 'string' || !Array.isArray(f.chunks) || !isCount(f.size)) bad('bad file entry')
    try {
      validateEntryPath(f.path)
    } catch {
      bad(`file path ${JSON.stringify(f.path)} would escape the checkpoint`)
    }
    if (paths.has(f.path)) bad(`file ${JSON.stringify(f.path)} listed twice`)
    paths.add(f.path)
    if (f.mode !== undefined && (!isCount(f.mode) || f.mode > 0o7777)) bad(`bad mode for ${f.path}`)
    if (f.packed !== undefined) {
      if (version < 2) bad(`${f.path} is packed in a format-${version} manifest`)
      const at = f.packed
      if (!at || typeof at !== 'object' || !isCount(at.pack) || at.pack >= packs.length || !isCount(at.offset)) bad(`bad pack position of ${f.path}`)
      if (f.chunks.length > 0 || f.size < 1) bad(`${f.path} is packed but has chunks of its own or no bytes`)
      // Compared without adding: offset + size of crafted numbers could pass 2^53 and round.
      const p = packs[at.pack]!
      if (at.offset > p.size || f.size > p.size - at.offset) bad(`${f.path} lies outside its pack`)
      spans[at.pack]!.push([at.offset, at.offset + f.size])
    } else {
      let sum = 0
      for (const c of f.chunks) {
        if (!c || typeof c.hash !== 'string' || !chunkId.test(c.hash) || !isCount(c.size) || c.size < 1 || c.size > m.chunkSize) bad(`bad chunk reference in ${f.path}`)
        sum += c.size
      }
      if (sum !== f.size) bad(`chunk sizes of ${f.path} do not add up`)
    }
    total += f.size
  }
  if (total !== m.totalSize) bad('file sizes do not add up to the total size')
  spans.forEach((s, i) => {
    s.sort((a, b) => a[0] - b[0])
    let end = 0
    for (const [from, to] of s) {
      if (from !== end) bad(`the files of pack ${i} ${from < end ? 'overlap' : 'leave a gap'} at offset ${Math.min(from, end)}`)
      end = to
    }
    if (end !== packs[i]!.size) bad(`the files of pack ${i} do not fill it (${end} of ${packs[i]!.size} bytes)`)
  })
  // "a" beside "a/b" cannot both be restored: one of them would have to be a file and a directory.
  for (const p of paths) {
    for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) if (paths.has(p.slice(0, i))) bad(`${JSON.stringify(p.slice(0, i))} is both a file and a directory`)
  }
  if (m.arrays !== undefined) {
    const file = m.files.find((f) => f.path === STATE_FILE)
    if (!Array.isArray(m.arrays) || !file || m.kind !== 'state') bad('array index without its state file')
    const names = new Set<string>()
    for (const a of m.arrays) {
      if (!a || typeof a.name !== 'string' || !isCount(a.offset) || !isCount(a.size) || a.offset + a.size > file!.size) {
        bad(`array ${JSON.stringify(a?.name)} lies outside the state file`)
      }
      try {
        validateEntryPath(a.name)
      } catch {
        bad(`array name ${JSON.stringify(a.name)} is not a valid name`)
      }
      if (names.has(a.name)) bad(`array ${JSON.stringify(a.name)} listed twice`)
      names.add(a.name)
      const problem = arrayProblem(a.dtype, a.shape, a.size)
      if (problem) bad(`array ${a.name} ${problem}`)
    }
  }
}

/** The pack list of a manifest, checked (empty when it has none). */
function checkPacks(m: Manifest, version: number, chunkId: RegExp, bad: (why: string) => never): ChunkRef[] {
  if (m.packs === undefined) return []
  if (version < 2) bad(`packs in a format-${version} manifest`)
  if (!Array.isArray(m.packs)) bad('bad pack list')
  for (const p of m.packs) {
    if (!p || typeof p !== 'object' || typeof p.hash !== 'string' || !chunkId.test(p.hash) || !isCount(p.size) || p.size < 1 || p.size > m.chunkSize) bad('bad pack reference')
  }
  return m.packs
}

/**
 * What is wrong with an array of a state checkpoint (its dtype, its shape against its size), or
 * undefined. Readers refuse a manifest with such an array; a write refuses it first, at the call.
 */
export function arrayProblem(dtype: unknown, shape: unknown, size: number): string | undefined {
  if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype)) return `has unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(', ')})`
  if (shape === undefined) return undefined
  if (!Array.isArray(shape) || !shape.every(isCount)) return `has a bad shape ${JSON.stringify(shape)} (whole numbers >= 0)`
  const n = shape.reduce((x: number, y: number) => x * y, 1)
  if (dtype !== 'bytes' && n * DTYPE_BYTES[dtype as DType] !== size) return `has shape [${shape.join(',')}], which does not match ${size} bytes of ${dtype}`
  return undefined
}

/** Bytes per element of a dtype (1 for raw bytes). */
export function dtypeBytes(d: DType): number {
  return DTYPE_BYTES[d]
}

/** File and array names inside a checkpoint obey the storage key rules: nothing escapes a restore dir. */
export function validateEntryPath(p: string): string {
  return validateKey(p, undefined, 'name')
}
