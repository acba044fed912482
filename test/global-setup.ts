import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TestProject } from 'vitest/node'
import { startTestServers } from './helpers/servers.js'

declare module 'vitest' {
  export interface ProvidedContext {
    s3Endpoint: string
    gcsEndpoint: string
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // npm test has done this already (a no-op then); it is here for `npx vitest run FILE` on a fresh clone.
  execFileSync(process.execPath, [fileURLToPath(new URL('../scripts/ensure-test-servers.mjs', import.meta.url))], { stdio: 'inherit' })
  // Every temporary directory of this run (the tests', their child processes', the servers') lives
  // under one root that goes at the end: tests killed mid-way, or processes they SIGKILL on
  // purpose, would otherwise leave checkpoints of up to 256 MiB in the system's temp dir each run.
  // The forks and every process they start take TMPDIR from here, and os.tmpdir() reads it.
  const root = mkdtempSync(path.join(tmpdir(), 'taskpoint-test-run-'))
  process.env.TMPDIR = root
  const servers = await startTestServers().catch((e: unknown) => {
    rmSync(root, { recursive: true, force: true })
    throw e
  })
  project.provide('s3Endpoint', servers.s3!)
  project.provide('gcsEndpoint', servers.gcs!)
  return async () => {
    try {
      await servers.stop()
    } finally {
      rmSync(root, { recursive: true, force: true })
    }
  }
}
