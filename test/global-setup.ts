import type { TestProject } from 'vitest/node'
import { startTestServers } from './helpers/servers.js'

declare module 'vitest' {
  export interface ProvidedContext {
    s3Endpoint: string
    gcsEndpoint: string
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const servers = await startTestServers()
  project.provide('s3Endpoint', servers.s3!)
  project.provide('gcsEndpoint', servers.gcs!)
  return () => servers.stop()
}
