import { createHash } from 'node:crypto'
import { TaskpointError } from '../errors.js'
import { validateKey } from '../storage/keys.js'

/** Bumped on any change a reader of the previous version could misread. */
export const FORMAT_VERSION = 1
const MAGIC = 'TPM1'

export const MANIFEST_DIR = 'manifests/'
export const CHUNK_DIR = 'chunks/'
export const WRITER_DIR = 'writers/'

export interface ChunkRef {
  /** sha256 of the chunk's bytes, hex. */
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
  chunks: ChunkRef[]
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
  format: typeof FORMAT_VERSION
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
  /** For state checkpoints: the JSON part, stored inline (it is small and wants no extra object). */
  json?: unknown
  /** For state checkpoints: the arrays inside STATE_FILE. */
  arrays?: ArrayEntry[]
}

export class CorruptCheckpointError extends TaskpointError {
  constructor(
    readonly key: string,
    readonly reason: string,
  ) {
    super('CorruptCheckpoint', `checkpoint ${key} is unusable: ${reason}. It is skipped; run \`taskpoint verify\` to see the damage`)
  }
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** `chunks/ab/abcdef…` — two-character fan-out keeps local directories small. */
export function chunkKey(hash: string): string {
  return `${CHUNK_DIR}${hash.slice(0, 2)}/${hash}`
}

export function chunkHashFromKey(key: string): string | undefined {
  const m = /^chunks\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(key)
  return m && m[2]!.startsWith(m[1]!) ? m[2] : undefined
}

export interface ManifestName {
  key: string
  epoch: number
  seq: number
  step: number
  writer: string
}

const pad = (n: number, w: number): string => String(n).padStart(w, '0')

/**
 * Manifest keys sort in commit order as plain strings: epoch, then seq, then writer id. A key is
 * unique per writer, so two writers never write the same key even on stores without
 * create-if-absent; ties between writers of one epoch are broken by writer id, deterministically.
 */
export function manifestKey(m: Pick<Manifest, 'epoch' | 'seq' | 'step' | 'writer'>): string {
  return `${MANIFEST_DIR}${pad(m.epoch, 8)}-${pad(m.seq, 12)}-${m.writer}-s${pad(m.step, 12)}.tpm`
}

export function parseManifestKey(key: string): ManifestName | undefined {
  const m = /^manifests\/(\d{8})-(\d{12})-([0-9a-z]+)-s(\d{12})\.tpm$/.exec(key)
  if (!m) return undefined
  return { key, epoch: Number(m[1]), seq: Number(m[2]), writer: m[3]!, step: Number(m[4]) }
}

export function compareNames(a: ManifestName, b: ManifestName): number {
  return a.epoch - b.epoch || a.seq - b.seq || (a.writer < b.writer ? -1 : a.writer > b.writer ? 1 : 0)
}

/** Header line `TPM1 <sha256 of body>` then the JSON body: a flipped bit anywhere is caught. */
export function encodeManifest(m: Manifest): Uint8Array {
  const body = Buffer.from(JSON.stringify(m))
  return Buffer.concat([Buffer.from(`${MAGIC} ${sha256Hex(body)}\n`), body])
}

export function decodeManifest(key: string, bytes: Uint8Array): Manifest {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const nl = buf.indexOf(10)
  if (nl < 0) throw new CorruptCheckpointError(key, 'manifest has no header line (truncated?)')
  const header = buf.subarray(0, nl).toString('latin1')
  const m = /^TPM(\d+) ([0-9a-f]{64})$/.exec(header)
  if (!m) throw new CorruptCheckpointError(key, 'manifest header is damaged')
  if (Number(m[1]) > FORMAT_VERSION) {
    throw new TaskpointError('UnsupportedFormat', `checkpoint ${key} has format ${m[1]}, newer than this taskpoint reads (${FORMAT_VERSION}): upgrade taskpoint`)
  }
  const body = buf.subarray(nl + 1)
  if (sha256Hex(body) !== m[2]) throw new CorruptCheckpointError(key, 'manifest checksum mismatch (truncated or altered)')
  let parsed: Manifest
  try {
    parsed = JSON.parse(body.toString('utf8')) as Manifest
  } catch {
    throw new CorruptCheckpointError(key, 'manifest body is not JSON')
  }
  checkManifestShape(key, parsed)
  return parsed
}

function checkManifestShape(key: string, m: Manifest): void {
  const bad = (why: string): never => {
    throw new CorruptCheckpointError(key, `manifest is malformed: ${why}`)
  }
  if (!m || typeof m !== 'object') bad('not an object')
  if (!Array.isArray(m.files)) bad('no file list')
  for (const f of m.files) {
    if (typeof f.path !== 'string' || !Array.isArray(f.chunks) || typeof f.size !== 'number') bad('bad file entry')
    try {
      validateEntryPath(f.path)
    } catch {
      bad(`file path ${JSON.stringify(f.path)} would escape the checkpoint`)
    }
    let total = 0
    for (const c of f.chunks) {
      if (!/^[0-9a-f]{64}$/.test(c.hash) || typeof c.size !== 'number') bad('bad chunk reference')
      total += c.size
    }
    if (total !== f.size) bad(`chunk sizes of ${f.path} do not add up`)
  }
  if (m.arrays !== undefined) {
    const file = m.files.find((f) => f.path === STATE_FILE)
    if (!Array.isArray(m.arrays) || !file) bad('array index without its state file')
    for (const a of m.arrays!) {
      if (typeof a.name !== 'string' || !Number.isSafeInteger(a.offset) || !Number.isSafeInteger(a.size) || a.offset < 0 || a.size < 0 || a.offset + a.size > file!.size) {
        bad(`array ${JSON.stringify(a.name)} lies outside the state file`)
      }
      try {
        validateEntryPath(a.name)
      } catch {
        bad(`array name ${JSON.stringify(a.name)} is not a valid name`)
      }
    }
  }
}

/** File and array names inside a checkpoint obey the storage key rules: nothing escapes a restore dir. */
export function validateEntryPath(p: string): string {
  return validateKey(p, 'local', 'name')
}
