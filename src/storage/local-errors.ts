import { AccessDeniedError, AlreadyExistsError, InvalidKeyError, NoSpaceError, NotFoundError, StorageError, TransientStorageError, type StorageErrorDetails } from '../errors.js'

/** A file-system error (errno code) as a typed StorageError. ENOSPC and EDQUOT are NoSpace, never retried. */
export function mapLocalError(e: unknown, d: StorageErrorDetails): unknown {
  if (e instanceof StorageError) return e
  const code = (e as NodeJS.ErrnoException).code
  const withCause = { ...d, cause: e }
  // A put under a key that is an object ("a/b" when "a" is a file): mkdir meets the file (EEXIST)
  // or the open walks through it (ENOTDIR). Neither means the object exists or is missing.
  if (d.op === 'put' && (code === 'ENOTDIR' || (code === 'EEXIST' && (e as NodeJS.ErrnoException).syscall === 'mkdir')))
    return new InvalidKeyError(withCause, `a part of the key's path is an object (${code}): on local disk "a" and "a/b" cannot both exist`)
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new NotFoundError(withCause)
    case 'EEXIST':
      return new AlreadyExistsError(withCause)
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new AccessDeniedError(withCause, `permission denied (${code}): check that the process may write under this directory`)
    case 'EAGAIN':
    case 'EBUSY':
    case 'EMFILE':
    case 'ENFILE':
    case 'EINTR':
      return new TransientStorageError(withCause, `temporary file-system error ${code}`)
    case 'ENOSPC':
    case 'EDQUOT':
      return new NoSpaceError(withCause, `no space left (${code}: disk or quota full): free space or prune old checkpoints (\`taskpoint prune\`)`)
    case 'ENAMETOOLONG':
      return new InvalidKeyError(withCause, 'a key segment is longer than the file system allows (255 bytes per name on most): use shorter names')
    case 'EISDIR':
    case 'ENOTEMPTY':
      return new InvalidKeyError(withCause, `the key names a directory of other keys (${code}): on local disk "a" and "a/b" cannot both exist`)
    default:
      return new StorageError('Unknown', `file-system error ${code ?? ''}: ${(e as Error)?.message ?? String(e)}`.trim(), withCause)
  }
}
