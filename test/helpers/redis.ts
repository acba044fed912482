import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'

export interface TestRedis {
  host: string
  port: number
  url: string
  stop(): Promise<void>
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

/**
 * A real redis-server (Debian's package; `node scripts/ensure-redis.mjs` installs it) on
 * 127.0.0.1 and a free port, with no persistence, in a temp dir removed on stop.
 */
export async function startRedis(): Promise<TestRedis> {
  let lastError: unknown
  // The free port can be taken between the probe and redis binding it: try a few.
  for (let i = 0; i < 5; i++) {
    const port = await freePort()
    const dir = mkdtempSync(path.join(tmpdir(), 'tp-redis-'))
    const child: ChildProcess = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'yes'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    try {
      await new Promise<void>((resolve, reject) => {
        let out = ''
        const onData = (d: Buffer): void => {
          out += d.toString()
          if (/Ready to accept connections/.test(out)) resolve()
        }
        child.stdout!.on('data', onData)
        child.once('error', (e: NodeJS.ErrnoException) =>
          reject(
            e.code === 'ENOENT' ? new Error('redis-server is not installed: run `node scripts/ensure-redis.mjs` (npm test does it through scripts/ensure-test-servers.mjs)') : e,
          ),
        )
        child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${out.slice(-400)}`)))
      })
      child.stdout!.resume()
      child.stderr!.resume()
      return {
        host: '127.0.0.1',
        port,
        url: `redis://127.0.0.1:${port}`,
        stop: async () => {
          if (child.exitCode === null && child.signalCode === null) {
            const done = new Promise((r) => child.once('exit', r))
            child.kill('SIGTERM')
            await done
          }
          rmSync(dir, { recursive: true, force: true })
        },
      }
    } catch (e) {
      lastError = e
      child.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
      if ((e as Error).message.includes('not installed')) throw e
    }
  }
  throw lastError
}
