import { bytes } from './args.js'

export interface Progress {
  update(done: number): void
  finish(): void
}

/**
 * Transfer progress on stderr: a redrawn bar on a TTY, a plain line every few seconds otherwise.
 * Nothing is shown for transfers that end within a second.
 */
export function progress(label: string, total: number, stream: NodeJS.WriteStream = process.stderr): Progress {
  const started = Date.now()
  let lastPrint = 0
  let shown = false
  let done = 0
  const render = (final: boolean): void => {
    const now = Date.now()
    const elapsed = (now - started) / 1000
    if (!final && now - started < 1000) return
    const rate = elapsed > 0 ? done / elapsed : 0
    const pct = total > 0 ? Math.min(100, (done / total) * 100) : 100
    if (stream.isTTY) {
      if (!final && now - lastPrint < 100) return
      const width = 24
      const fill = Math.round((pct / 100) * width)
      stream.write(`\r${label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${pct.toFixed(0).padStart(3)}% ${bytes(done)}/${bytes(total)} ${bytes(rate)}/s${final ? '\n' : ''}`)
    } else {
      if (!final && now - lastPrint < 2000) return
      stream.write(`${label}: ${pct.toFixed(0)}% (${bytes(done)} of ${bytes(total)}, ${bytes(rate)}/s)\n`)
    }
    shown = true
    lastPrint = now
  }
  return {
    update(n) {
      done = n
      render(false)
    },
    finish() {
      if (shown) render(true)
    },
  }
}
