import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

let cached: Record<string, unknown> | undefined

/**
 * What it takes to tell later which code produced a checkpoint: versions, platform, the git commit
 * of the working directory and a hash of the entry script. Computed once per process; every field
 * is best effort and missing rather than wrong.
 */
export function reproInfo(): Record<string, unknown> {
  if (cached) return cached
  const info: Record<string, unknown> = {
    taskpoint: packageVersion(),
    node: process.version,
    platform: process.platform,
    arch: process.arch,
  }
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 2000 }).toString().trim()
    if (/^[0-9a-f]{40}$/.test(commit)) info.gitCommit = commit
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 2000 }).toString()
    info.gitDirty = dirty.trim().length > 0
  } catch {
    // not a git checkout, or git missing: leave it out
  }
  const entry = process.argv[1]
  if (entry) {
    try {
      info.entryScript = entry
      info.entrySha256 = createHash('sha256').update(readFileSync(entry)).digest('hex')
    } catch {
      // entry is not a readable file (REPL, -e)
    }
  }
  cached = info
  return info
}

function packageVersion(): string | undefined {
  try {
    return (createRequire(import.meta.url)('../../../package.json') as { version?: string }).version
  } catch {
    return undefined
  }
}
