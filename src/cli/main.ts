#!/usr/bin/env node
import { TaskpointError } from '../index.js'
import { UsageError } from './args.js'
import { commands, usage } from './commands.js'
import { forShell } from './messages.js'

import { CLI_EXIT } from './args.js'

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    console.log(usage())
    return name ? CLI_EXIT.ok : CLI_EXIT.usage
  }
  if (name === '--version' || name === '-v') {
    const { createRequire } = await import('node:module')
    console.log((createRequire(import.meta.url)('../../../package.json') as { version: string }).version)
    return CLI_EXIT.ok
  }
  const cmd = commands[name]
  if (!cmd) {
    console.error(`taskpoint: unknown command "${name}"\n\n${usage()}`)
    return CLI_EXIT.usage
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(cmd.help)
    return CLI_EXIT.ok
  }
  try {
    return await cmd.run(rest)
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`taskpoint ${name}: ${e.message}\n\n${cmd.help}`)
      return CLI_EXIT.usage
    }
    const err = e as Error & { code?: string }
    // The reader of our output went away (`taskpoint cat … | head`): end quietly, as Unix tools do.
    if (err.code === 'EPIPE') return CLI_EXIT.ok
    console.error(`taskpoint ${name}: ${err instanceof TaskpointError ? forShell(err) : (err.stack ?? String(e))}`)
    return CLI_EXIT.failed
  }
}

// A failed write to stdout is also reported to the stream itself, where unheard it would crash the
// process with a stack. Heard and ignored here: the command goes on and ends with its own exit code
// (a prune still collects, a verify still reports damage with 3); output is best effort, and the
// one command whose output is its work (cat) sees the error in its own write.
process.stdout.on('error', () => {})
process.exitCode = await main(process.argv.slice(2))
