import { createHash } from 'node:crypto'
import { isNotFound } from '../errors.js'
import type { Storage } from '../storage/types.js'
import { TaskConfigError } from './errors.js'

/**
 * JSON with object keys sorted at every level, so equal inputs hash equally whatever the order
 * their keys were written in. Refuses what JSON would silently drop or change.
 */
export function canonicalJson(value: unknown, where = 'inputs'): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TaskConfigError(`${where} contains ${value}, which JSON cannot represent; cached tasks need JSON inputs`)
    return JSON.stringify(value)
  }
  if (Array.isArray(value)) return `[${value.map((v, i) => canonicalJson(v, `${where}[${i}]`)).join(',')}]`
  if (typeof value === 'object') {
    const proto = Object.getPrototypeOf(value)
    if (proto !== Object.prototype && proto !== null) {
      throw new TaskConfigError(
        `${where} is a ${proto?.constructor?.name ?? 'non-plain object'}; cached tasks need plain JSON inputs (objects, arrays, strings, finite numbers, booleans, null)`,
      )
    }
    const keys = Object.keys(value as object).sort()
    return `{${keys
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k], `${where}.${k}`)}`)
      .join(',')}}`
  }
  throw new TaskConfigError(`${where} is a ${typeof value}; cached tasks need JSON-serialisable inputs`)
}

export function cacheKey(task: string, version: string, inputs: unknown): string {
  // The inputs are made canonical on their own first, so a refusal names the user's path
  // (`inputs.d`), not one inside this wrapper object (`inputs.inputs.d`).
  // Same text as canonicalJson({ inputs, task, version }), so existing cache keys stay valid.
  const input = inputs === undefined ? '' : `"inputs":${canonicalJson(inputs)},`
  const h = createHash('sha256')
    .update(`{${input}"task":${JSON.stringify(task)},"version":${JSON.stringify(version)}}`)
    .digest('hex')
  // "." and ".." are no key segment (they would name the level above): their dots become "_" too.
  const safe = (s: string): string => {
    const out = s.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 100) || '_'
    return out === '.' || out === '..' ? out.replace(/\./g, '_') : out
  }
  return `cache/${safe(task)}/${safe(version)}/${h}.json`
}

interface Entry {
  sha256: string
  output: string
}

/** The stored output, or `{ hit: false }`; a damaged entry counts as a miss. */
export async function readCache(storage: Storage, key: string): Promise<{ hit: true; output: unknown } | { hit: false }> {
  let bytes: Uint8Array
  try {
    bytes = await storage.get(key)
  } catch (e) {
    if (isNotFound(e)) return { hit: false }
    throw e
  }
  try {
    const entry = JSON.parse(Buffer.from(bytes).toString('utf8')) as Entry
    if (createHash('sha256').update(entry.output).digest('hex') !== entry.sha256) return { hit: false }
    return { hit: true, output: JSON.parse(entry.output) }
  } catch {
    return { hit: false }
  }
}

export async function writeCache(storage: Storage, key: string, output: unknown): Promise<void> {
  const text = JSON.stringify(output === undefined ? null : output)
  const entry: Entry = { sha256: createHash('sha256').update(text).digest('hex'), output: text }
  await storage.put(key, Buffer.from(JSON.stringify(entry)))
}
