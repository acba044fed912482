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

// A closed pipe is also reported to the stream itself; unheard, Node would print a stack and exit 1.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(CLI_EXIT.ok)
  console.error(`taskpoint: cannot write the output: ${e.message}`)
  process.exit(CLI_EXIT.failed)
})
process.exitCode = await main(process.argv.slice(2))
