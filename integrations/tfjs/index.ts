// taskpoint/tfjs: checkpointed training for TensorFlow.js (any flavour: @tensorflow/tfjs with the
// cpu or wasm backend, @tensorflow/tfjs-node, -node-gpu). Pass your own `tf` in: the integration
// never imports tfjs itself, so it cannot load a second copy beside yours.
export { createCheckpointCallback, STATE_FORMAT, type CheckpointCallbackOptions, type SaveEvery, type SaveKind, type SavedTraining } from './callback.js'
export { fitDatasetWithCheckpoints, fitWithCheckpoints, resume, type FitResult } from './fit.js'
// The generator is framework-independent (src/runtime/random.ts); tfjs users import it from here.
export { seedRandom, SeededRandom, Xoshiro128 } from '../../src/runtime/random.js'
export { TfStateError, captureState, restoreState } from './state.js'
