// taskpoint/bullmq: a fleet of preemptible workers sharing a BullMQ queue of long jobs. Each job
// runs as a taskpoint task whose checkpoints live at `<base>/<queue>/<job id>`, so whichever
// worker picks a job up next resumes it. `bullmq` is an optional peer dependency.
export { checkpointed, type CheckpointedOptions, type CheckpointedProcessor, type JobContext, type JobHandler } from './processor.js'
export { runFleetWorker, type FleetWorker, type FleetWorkerOptions } from './worker.js'
export { classifyJobError, type JobOutcome } from './errors.js'
export { cleanupCompleted, type CompletedPolicy } from './cleanup.js'
export { BullmqConfigError, jobCheckpointUri } from './location.js'
export type { FleetProgress } from './progress.js'
