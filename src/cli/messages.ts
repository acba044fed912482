import { StorageError } from '../index.js'

/**
 * Library errors tell a programmer which option to pass; at a shell the same fault is fixed in the
 * environment. Rewrites those hints for the CLI and leaves every other message as it is.
 */
export function forShell(err: Error): string {
  if (!(err instanceof StorageError) || err.code !== 'InvalidConfig') return err.message
  if (err.backend === 's3' && /credentials/i.test(err.message)) {
    return `${where(err)}no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment, and AWS_REGION; for S3-compatible servers (MinIO, R2, ...) also AWS_ENDPOINT_URL`
  }
  return err.message.replace(/,? or pass [\w.]+ in code\b|,? or pass clientConfig\.\w+/g, '')
}

function where(err: StorageError): string {
  return /^\[[^\]]*\] /.exec(err.message)?.[0] ?? ''
}
