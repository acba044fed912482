import type { Command } from './args.js'
import { ls } from './commands/ls.js'
import { gc, prune } from './commands/prune.js'
import { cat, restore } from './commands/restore.js'
import { run } from './commands/run.js'
import { show } from './commands/show.js'
import { verify } from './commands/verify.js'

export const commands: Record<string, Command> = { ls, show, verify, restore, cat, prune, gc, run }

export function usage(): string {
  return `taskpoint: checkpoints of long-running training jobs

Usage: taskpoint <command> [options]     (taskpoint <command> --help for details)

Commands:
  ls        list committed checkpoints (step, time, size, new bytes, metadata)
  show      one checkpoint's manifest in full
  verify    re-hash every chunk; exit 3 when anything is damaged
  restore   write a checkpoint's files into a directory
  cat       write one file of a checkpoint to stdout
  prune     delete checkpoints a retention policy does not keep, then their chunks
  gc        delete unreferenced chunks
  run       run a command under the local retry supervisor

URIs: /local/path, file:///path, s3://bucket/prefix, gs://bucket/prefix
Exit codes: 0 ok, 1 failed, 2 usage error, 3 corrupt or missing data (verify)`
}
