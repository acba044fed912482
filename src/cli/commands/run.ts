import { supervise } from '../../engines.js'
import { UsageError, intFlag, parse, type Command } from '../args.js'

export const run: Command = {
  help: `taskpoint run [--retries N] [--checkpoint URI] [--retry-on 75,143] [--delay-ms MS] -- COMMAND [ARGS...]

Runs COMMAND and runs it again when it exits with a retry status (75 recoverable, 143 preempted)
or is killed by a signal, up to N times (default 3, at most 10). Each attempt gets
TASKPOINT_ATTEMPT (0, 1, ...) and, with --checkpoint, TASKPOINT_CHECKPOINT in its environment.
SIGTERM/SIGINT are passed to the running attempt's whole process group (so the trainer gets
them even behind a wrapper that does not pass signals on, such as npx tsx train.ts or sh -c) and
stop the retries. Each attempt runs in a process group of its own: it should not read from the
terminal. Exits with the last attempt's exit code.`,
  async run(argv) {
    const dd = argv.indexOf('--')
    if (dd < 0 || dd === argv.length - 1) throw new UsageError('give the command after --, e.g. taskpoint run --retries 3 -- node train.js')
    const { values } = parse(argv.slice(0, dd), {
      retries: { type: 'string' },
      checkpoint: { type: 'string' },
      'retry-on': { type: 'string' },
      'delay-ms': { type: 'string' },
      'no-retry-on-signal': { type: 'boolean' },
    })
    const retries = intFlag(values.retries as string | undefined, 'retries') ?? 3
    if (retries > 10) throw new UsageError('--retries is at most 10')
    const retryOn = (values['retry-on'] as string | undefined)?.split(',').map((v) => {
      const n = intFlag(v.trim(), 'retry-on')
      if (n === undefined) throw new UsageError('--retry-on takes exit codes like 75,143')
      return n
    })
    const [command, ...args] = argv.slice(dd + 1) as [string, ...string[]]
    const delayMs = intFlag(values['delay-ms'] as string | undefined, 'delay-ms')
    return supervise({
      command,
      args,
      retries,
      ...(typeof values.checkpoint === 'string' ? { checkpoint: values.checkpoint } : {}),
      ...(retryOn ? { retryOn } : {}),
      ...(delayMs !== undefined ? { delayMs } : {}),
      retryOnSignal: !values['no-retry-on-signal'],
    })
  },
}
