// `taskpoint/engines`: glue for the engines that run and rerun jobs (Flyte, Kubernetes, AWS Batch,
// SkyPilot, the local supervisor): exit codes and classification, engine detection, Flyte's error
// document, the output cache's keys, and the task runtime's documented defaults.
export { DEFAULT_EXIT_CODES, classify } from './runtime/main.js'
export { supervise, type SuperviseOptions } from './runtime/supervisor.js'
export { detectEngine, type EngineInfo, type EngineName } from './runtime/engines/detect.js'
export { encodeErrorDocument, isEmptyFlyteValue, ErrorKind, ErrorOrigin, type ContainerError } from './runtime/engines/flyte.js'
export { canonicalJson, cacheKey } from './runtime/cache.js'
export { parseDuration } from './runtime/errors.js'
export { DEFAULT_RETRY_DELAY, DEFAULT_TASK_KEEP, retryDelayMs } from './runtime/task.js'
