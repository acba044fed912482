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
    console.error(`taskpoint ${name}: ${err instanceof TaskpointError ? forShell(err) : (err.stack ?? String(e))}`)
    return CLI_EXIT.failed
  }
}

process.exitCode = await main(process.argv.slice(2))
