import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createInterface } from 'node:readline'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export interface TestServers {
  s3?: string
  gcs?: string
  /** The servers' process (benchmarks read its CPU time). */
  pid?: number | undefined
  stop(): Promise<void>
}

// From test/helpers (vitest) or dist/test/helpers (compiled, for benchmarks and the demo).
const here = path.dirname(fileURLToPath(import.meta.url))
const serveScript = [path.join(here, '..', 'servers', 'serve.mjs'), path.join(here, '..', '..', '..', 'test', 'servers', 'serve.mjs')].find((p) => existsSync(p))!

/** Starts the S3 and GCS test servers in a child process bound to 127.0.0.1. */
export async function startTestServers(only?: 's3' | 'gcs'): Promise<TestServers> {
  const child: ChildProcess = spawn(process.execPath, [serveScript, ...(only ? ['--only', only] : [])], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! })
    rl.once('line', (l) => {
      rl.close()
      resolve(l)
    })
    child.once('exit', (code) => reject(new Error(`test servers exited early with code ${code}`)))
    setTimeout(() => reject(new Error('test servers did not start within 60 s')), 60_000).unref()
  })
  const urls = JSON.parse(line) as { s3?: string; gcs?: string }
  return {
    ...urls,
    pid: child.pid,
    stop: async () => {
      if (child.exitCode !== null) return
      const done = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      await done
    },
  }
}
