// CPU seconds spent by everything this process started (reaped and live descendants), from
// /proc: on a machine shared with other work, wall time measures the neighbours as much as the
// code, while CPU time moves far less with load. Linux only: undefined elsewhere.
import { readFileSync, readdirSync } from 'node:fs'

const TICK = 100 // USER_HZ: 100 on every Linux that Node supports

function stat(pid: number | 'self'): string[] | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces: split after its closing parenthesis.
    return s.slice(s.lastIndexOf(')') + 2).split(' ')
  } catch {
    return undefined
  }
}

function children(pid: number): number[] {
  const out: number[] = []
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const list = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim()
      if (list) out.push(...list.split(' ').map(Number))
    }
  } catch {
    // gone meanwhile
  }
  return out
}

/** CPU seconds of all descendants so far (live ones included), or undefined without /proc. */
export function descendantsCpuSeconds(): number | undefined {
  const self = stat('self')
  if (!self) return undefined
  // Fields after the name, 0-based from field 3: utime 11, stime 12, cutime 13, cstime 14.
  let ticks = Number(self[13]) + Number(self[14])
  const seen = new Set<number>()
  const walk = (pid: number): void => {
    for (const c of children(pid)) {
      if (seen.has(c)) continue
      seen.add(c)
      const s = stat(c)
      // A live child's own time plus what its reaped children left in it.
      if (s) ticks += Number(s[11]) + Number(s[12]) + Number(s[13]) + Number(s[14])
      walk(c)
    }
  }
  walk(process.pid)
  return ticks / TICK
}
