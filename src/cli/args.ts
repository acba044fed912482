import { parseArgs, type ParseArgsConfig } from 'node:util'
import { parseDuration } from '../engines.js'

/** Exit codes of the CLI itself (`taskpoint run` exits with its task's code instead). */
export const CLI_EXIT = { ok: 0, failed: 1, usage: 2, corrupt: 3 } as const

/** Wrong flags or arguments: reported with the command's help and exit code 2. */
export class UsageError extends Error {}

export interface Command {
  help: string
  run(argv: string[]): Promise<number>
}

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(
  argv: string[],
  options: T,
): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true }) as { values: Record<string, string | boolean | undefined>; positionals: string[] }
  } catch (e) {
    throw new UsageError(explainParseError(e as Error & { code?: string }, Object.keys(options)))
  }
}

/** Node's parseArgs messages, in the CLI's words, with a "did you mean" for a misspelt flag. */
function explainParseError(e: Error & { code?: string }, known: string[]): string {
  const flag = /'(-{1,2}[^' ]+)[^']*'/.exec(e.message)?.[1]
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && flag) {
    const name = flag.replace(/^-+/, '').split('=')[0]!
    const near = closest(name, known)
    const flags = known.map((k) => `--${k}`).join(', ')
    return `unknown option ${flag}${near ? `; did you mean --${near}?` : known.length > 0 ? `; this command takes ${flags}` : '; this command takes no options'}`
  }
  if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && flag) return `${flag} ${/argument missing/.test(e.message) ? 'needs a value' : 'takes no value'}`
  return e.message
}

/** The known name nearest to `name` by edit distance, if it is near enough to be a typo. */
export function closest(name: string, known: string[]): string | undefined {
  let best: string | undefined
  let bestD = Infinity
  for (const k of known) {
    const d = editDistance(name, k)
    if (d < bestD) [best, bestD] = [k, d]
  }
  return best !== undefined && (bestD <= Math.max(1, Math.floor(best.length / 3)) || best.startsWith(name) || name.startsWith(best)) ? best : undefined
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = cur
  }
  return prev[b.length]!
}

export function intFlag(v: string | undefined, name: string, min = 0): number | undefined {
  if (v === undefined) return undefined
  if (!/^\d+$/.test(v) || Number(v) < min) throw new UsageError(`--${name} takes a whole number >= ${min}, got "${v}"`)
  return Number(v)
}

export function bytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024
    i++
  }
  return `${i === 0 ? n : n.toFixed(1)} ${u[i]}`
}

/** A duration flag such as 15m or 90s; 0 (any unit) is allowed and means none. */
export function durationFlag(v: string | undefined, name: string, dflt: string): number {
  const text = v ?? dflt
  if (/^0+(ms|s|m|h|d)?$/.test(text)) return 0
  try {
    return parseDuration(text)
  } catch {
    throw new UsageError(`--${name} takes a duration like 90s, 15m or 2h, got "${text}"`)
  }
}

/** Refuses positionals beyond what a command takes. */
export function maxArgs(positionals: string[], n: number, shape: string): void {
  if (positionals.length > n) throw new UsageError(`too many arguments; expected ${shape}`)
}
