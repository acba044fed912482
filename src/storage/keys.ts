import { randomBytes } from 'node:crypto'
import { InvalidKeyError, type StorageBackend } from '../errors.js'

/** Longest key we accept: S3 and GCS both cap object names at 1024 bytes, and the root prefix needs room. */
export const MAX_KEY_BYTES = 900

/** Marks temporary files of the local driver; a key may never contain it, so listings can skip them. */
export const TEMP_MARK = '.tp-tmp-'

/**
 * A temp file name for the directory of its target: TEMP_MARK and 12 random hex digits, 20 bytes
 * whatever the target's name, so it never passes NAME_MAX (255) the way `<target><mark><hex>` did
 * for 240-255-byte names. Starts with a dot, so it stays out of sight.
 */
export function tempName(): string {
  // Random bytes drawn a pool at a time: one getrandom call per put cost more than the rest of its name.
  if (poolAt + 6 > pool.byteLength) {
    pool = randomBytes(6 * 256)
    poolAt = 0
  }
  poolAt += 6
  return `${TEMP_MARK}${pool.toString('hex', poolAt - 6, poolAt)}`
}
let pool = Buffer.alloc(0)
let poolAt = 0

/**
 * Refuses any key that could escape the storage root or mean different things on different
 * backends. Returns the key unchanged when it is acceptable. `backend` names the driver in the
 * error; leave it undefined for names that belong to no storage (paths inside a checkpoint).
 */
export function validateKey(key: string, backend: StorageBackend | undefined, op: string): string {
  const fail = (why: string): never => {
    throw new InvalidKeyError({ backend, key: JSON.stringify(key), op }, `${why}; keys are relative, '/'-separated names like "chunks/ab/abcd" or "weights/layer1.bin"`)
  }
  if (typeof key !== 'string' || key.length === 0) fail('empty key')
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) fail(`key longer than ${MAX_KEY_BYTES} bytes`)
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(key)) fail('control character (NUL, newline, ...) in key')
  if (key.includes('\\')) fail('backslash in key (a path separator on Windows)')
  if (key.startsWith('/')) fail('absolute key')
  if (/^[a-zA-Z]:/.test(key)) fail('drive-letter key')
  if (key.includes(TEMP_MARK)) fail(`"${TEMP_MARK}" is reserved for temporary files`)
  for (const seg of key.split('/')) {
    if (seg === '') fail('empty path segment (leading, trailing or doubled "/")')
    if (seg === '.' || seg === '..') fail(`"${seg}" segment`)
  }
  return key
}

/** A list prefix may be empty or end in '/', but otherwise obeys the key rules. */
export function validatePrefix(prefix: string, backend: StorageBackend): string {
  if (prefix === '') return prefix
  const body = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
  validateKey(body, backend, 'list')
  return prefix
}

/** Joins a root prefix (may be empty) and a validated key. */
export function joinKey(root: string, key: string): string {
  return root === '' ? key : `${root}/${key}`
}
