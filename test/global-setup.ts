import { execFileSync } from 'node:child_process'
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
  const servers = await startTestServers()
  project.provide('s3Endpoint', servers.s3!)
  project.provide('gcsEndpoint', servers.gcs!)
  return () => servers.stop()
}
