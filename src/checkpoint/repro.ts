import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { promisify } from 'node:util'

const run = promisify(execFile)
let cached: Promise<Record<string, unknown>> | undefined

/**
 * What it takes to tell later which code produced a checkpoint: versions, platform, the git commit
 * of the working directory and a hash of the entry script. Computed once per process, in the
 * background (a training loop must not wait on `git`); every field is best effort and missing
 * rather than wrong.
 */
export function reproInfo(): Promise<Record<string, unknown>> {
  cached ??= collect()
  return cached
}

async function collect(): Promise<Record<string, unknown>> {
  const info: Record<string, unknown> = {
    taskpoint: packageVersion(),
    node: process.version,
    platform: process.platform,
    arch: process.arch,
  }
  const git = async (args: string[]): Promise<string | undefined> => {
    try {
      return (await run('git', args, { timeout: 2000 })).stdout.trim()
    } catch {
      return undefined // not a git checkout, or git missing
    }
  }
  const [commit, status] = await Promise.all([git(['rev-parse', 'HEAD']), git(['status', '--porcelain', '--untracked-files=no'])])
  if (commit && /^[0-9a-f]{40}$/.test(commit)) {
    info.gitCommit = commit
    if (status !== undefined) info.gitDirty = status.length > 0
  }
  const entry = process.argv[1]
  if (entry) {
    try {
      info.entrySha256 = createHash('sha256')
        .update(await readFile(entry))
        .digest('hex')
      info.entryScript = entry
    } catch {
      // entry is not a readable file (REPL, -e)
    }
  }
  return info
}

function packageVersion(): string | undefined {
  try {
    return (createRequire(import.meta.url)('../../../package.json') as { version?: string }).version
  } catch {
    return undefined
  }
}
