import { parseArgs, type ParseArgsConfig } from 'node:util'

/** Exit codes of the CLI itself (`taskpoint run` exits with its task's code instead). */
export const CLI_EXIT = { ok: 0, failed: 1, usage: 2, corrupt: 3 } as const

/** Wrong flags or arguments: reported with the command's help and exit code 2. */
export class UsageError extends Error {}

export interface Command {
  help: string
  run(argv: string[]): Promise<number>
}

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true }) as { values: Record<string, string | boolean | undefined>; positionals: string[] }
  } catch (e) {
    throw new UsageError((e as Error).message)
  }
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
