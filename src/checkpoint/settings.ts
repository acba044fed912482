import { ConfigError } from '../errors.js'
import { WRITER_ID } from '../format/manifest.js'
import type { StorageCapabilities } from '../storage/types.js'
import { MAX_TIMER_MS } from '../timer-range.js'
import { lockSettings } from './locks.js'
import type { CheckpointerOptions } from './options.js'
import { keepAll, type RetentionPolicy } from './retention.js'

const MiB = 1024 * 1024

/** A Checkpointer's options with their defaults in place. */
export type Settings = CheckpointerOptions & {
  keep: RetentionPolicy
  chunkSize: number
  concurrency: number
  packFilesUpTo: number
}

/**
 * The options of `Checkpointer.open` with their defaults, every one checked. An option given as
 * `undefined` takes its default (callers pass `{ chunkSize: opts.chunkSize }` through). A mistake
 * is a ConfigError here, at open, naming the option: not a warning at every commit (a `keep` that is
 * no policy), an SDK's error at the first write (`concurrency: 0`), or a checkpoint whose manifest
 * no reader accepts (`attempt: -1`).
 */
export function checkpointerSettings(capabilities: StorageCapabilities, given: CheckpointerOptions): Settings {
  // null as undefined: options often come from JSON configs, which have no undefined.
  const options = Object.fromEntries(Object.entries(given ?? {}).filter(([, v]) => v !== null)) as CheckpointerOptions
  // A misspelt key would otherwise be ignored without a word (`keepp: latest(3)` kept everything).
  onlyKnown('', options, KNOWN.top)
  for (const k of ['gc', 'locks', 'chunkCache'] as const) {
    const v = options[k]
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) onlyKnown(`${k}.`, v, KNOWN[k])
  }
  const keep = options.keep ?? keepAll
  if (typeof keep !== 'function') {
    throw new ConfigError(`keep must be a retention policy such as latest(3), everyNSteps(100), best(...), anyOf(...) or keepAll, got ${shown(keep)}`)
  }
  const chunkSize = options.chunkSize ?? capabilities.preferredChunkSize ?? 4 * MiB
  if (!wholeIn(chunkSize, 1024, 1024 * MiB)) throw new ConfigError(`chunkSize must be a whole number from 1024 to 1 GiB, got ${shown(chunkSize)}`)
  const concurrency = options.concurrency ?? capabilities.preferredConcurrency
  if (!wholeIn(concurrency, 1, 1024)) throw new ConfigError(`concurrency must be a whole number from 1 to 1024, got ${shown(concurrency)}`)
  const packFilesUpTo = options.packFilesUpTo ?? Math.min(MiB, chunkSize)
  if (!wholeIn(packFilesUpTo, 0, chunkSize)) throw new ConfigError(`packFilesUpTo must be a whole number from 0 to chunkSize (${chunkSize}), got ${shown(packFilesUpTo)}`)
  if (options.writerId !== undefined && (typeof options.writerId !== 'string' || !WRITER_ID.test(options.writerId))) {
    throw new ConfigError(`writerId must be 1-40 characters of [0-9a-z], got ${shown(options.writerId)}`)
  }
  if (options.attempt !== undefined && !wholeIn(options.attempt, 0, Number.MAX_SAFE_INTEGER)) {
    throw new ConfigError(`attempt must be a whole number >= 0, got ${shown(options.attempt)}`)
  }
  const gc = options.gc
  if (gc !== undefined) {
    if (gc === null || typeof gc !== 'object') throw new ConfigError(`gc must be an object of { minAgeMs, enabled, sweepAfterMs }, got ${shown(gc)}`)
    // Infinity: unreferenced chunks are never collected. No timer waits this long.
    if (gc.minAgeMs !== undefined && !(typeof gc.minAgeMs === 'number' && gc.minAgeMs >= 0)) {
      throw new ConfigError(`gc.minAgeMs must be a number of ms >= 0 (Infinity: never collect), got ${shown(gc.minAgeMs)}`)
    }
    if (gc.enabled !== undefined && typeof gc.enabled !== 'boolean') throw new ConfigError(`gc.enabled must be true or false, got ${shown(gc.enabled)}`)
    if (gc.sweepAfterMs !== undefined && !wholeIn(gc.sweepAfterMs, 0, MAX_TIMER_MS)) {
      throw new ConfigError(`gc.sweepAfterMs must be a whole number of milliseconds from 0 to ${MAX_TIMER_MS}, got ${shown(gc.sweepAfterMs)}`)
    }
  }
  lockSettings(options.locks)
  const cache = options.chunkCache
  if (cache !== undefined && typeof cache !== 'boolean' && (cache === null || typeof cache !== 'object' || Array.isArray(cache))) {
    throw new ConfigError(`chunkCache must be true, false or { dir, maxBytes }, got ${shown(cache)}`)
  }
  if (cache && typeof cache === 'object' && cache.dir !== undefined && (typeof cache.dir !== 'string' || cache.dir === '')) {
    throw new ConfigError(`chunkCache.dir must be a directory path, got ${shown(cache.dir)}`)
  }
  for (const name of ['onProgress', 'onWarning'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'function') throw new ConfigError(`${name} must be a function, got ${shown(options[name])}`)
  }
  const repro = options.repro
  if (repro !== undefined && typeof repro !== 'boolean') {
    let json: string | undefined
    try {
      json = repro !== null && typeof repro === 'object' && !Array.isArray(repro) ? JSON.stringify(repro) : undefined
    } catch {
      json = undefined
    }
    // Stored in every manifest: what JSON cannot hold would fail each commit instead.
    if (json === undefined) throw new ConfigError(`repro must be true, false or a plain object of JSON values, got ${shown(repro)}`)
  }
  return { ...options, keep, chunkSize, concurrency, packFilesUpTo }
}

const KNOWN = {
  top: ['keep', 'chunkSize', 'packFilesUpTo', 'concurrency', 'storage', 'writerId', 'attempt', 'gc', 'locks', 'repro', 'chunkCache', 'onProgress', 'onWarning'],
  gc: ['minAgeMs', 'enabled', 'sweepAfterMs'],
  locks: ['staleMs', 'refreshMs', 'waitMs'],
  chunkCache: ['dir', 'maxBytes'],
}

function onlyKnown(where: string, o: object, known: string[]): void {
  const unknown = Object.keys(o).filter((k) => !known.includes(k))
  if (unknown.length > 0) throw new ConfigError(`unknown option ${where}${unknown[0]}: the ${where ? `${where.slice(0, -1)} ` : ''}options are ${known.join(', ')}`)
}

function wholeIn(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max
}

/** A value as an error message shows it: strings quoted, objects by their kind. */
function shown(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v)
  if (typeof v === 'function') return 'a function'
  if (Array.isArray(v)) return 'an array'
  if (v !== null && typeof v === 'object') return `an object (${Object.keys(v).slice(0, 3).join(', ') || 'no keys'})`
  return String(v)
}
