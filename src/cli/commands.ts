import type { Command } from './args.js'
import { run } from './commands/run.js'

export const commands: Record<string, Command> = { run }

export function usage(): string {
  return `taskpoint: checkpoints of long-running training jobs

Usage: taskpoint <command> [options]     (taskpoint <command> --help for details)

Commands:
  run       run a command under the local retry supervisor
${Object.keys(commands).filter((c) => c !== 'run').map((c) => `  ${c}`).join('\n')}

URIs: /local/path, file:///path, s3://bucket/prefix, gs://bucket/prefix
Exit codes: 0 ok, 1 failed, 2 usage error, 3 corrupt or missing data (verify)`
}
