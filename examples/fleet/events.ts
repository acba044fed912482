// The fleet's observable events: one line each on stderr, `fleet-event {json}`, read by the demo,
// the benchmark and the tests (which never depend on timing, only on what happened in what order).
export interface FleetEvent {
  ev: string
  job?: string
  worker?: string
  step?: number
  [k: string]: unknown
}

const PREFIX = 'fleet-event '
let worker = process.env.FLEET_WORKER_NAME ?? `pid${process.pid}`

export function setWorkerName(name: string): void {
  worker = name
}

export function emit(e: FleetEvent): void {
  process.stderr.write(`${PREFIX}${JSON.stringify({ worker, t: Date.now(), ...e })}\n`)
}

/** Parses the events out of a chunk of a worker's stderr (other lines are passed to `other`). */
export function parseEvents(text: string, other?: (line: string) => void): (FleetEvent & { t: number; worker: string })[] {
  const out: (FleetEvent & { t: number; worker: string })[] = []
  for (const line of text.split('\n')) {
    if (line.startsWith(PREFIX)) {
      try {
        out.push(JSON.parse(line.slice(PREFIX.length)))
      } catch {
        other?.(line)
      }
    } else if (line) other?.(line)
  }
  return out
}
