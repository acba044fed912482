// The servers a local fleet needs, for the demo and the benchmark: a real Redis on 127.0.0.1 and
// either the S3 test server (workers share nothing but Redis and the bucket) or a local directory.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

export async function fleetEnvironment(
  backend: string,
): Promise<{ redisUrl: string; checkpoint: (name: string) => string; env: Record<string, string>; stop: () => Promise<void> }> {
  const { startRedis } = await import('../../test/helpers/redis.js')
  const redis = await startRedis()
  if (backend === 'local') {
    const dir = mkdtempSync(path.join(tmpdir(), 'taskpoint-fleet-'))
    return { redisUrl: redis.url, checkpoint: (n) => path.join(dir, n), env: {}, stop: redis.stop }
  }
  const { startTestServers } = await import('../../test/helpers/servers.js')
  const servers = await startTestServers('s3')
  const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3')
  const c = new S3Client({ endpoint: servers.s3!, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'demo', secretAccessKey: 'demo' } })
  await c.send(new CreateBucketCommand({ Bucket: 'fleet' }))
  c.destroy()
  return {
    redisUrl: redis.url,
    checkpoint: (n) => `s3://fleet/${n}`,
    env: { AWS_ENDPOINT_URL: servers.s3!, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'demo', AWS_SECRET_ACCESS_KEY: 'demo' },
    stop: async () => {
      await servers.stop()
      await redis.stop()
    },
  }
}
