# A taskpoint trainer as a Flyte ContainerTask. Propeller renders the checkpoint prefixes and the
# output prefix into the arguments; taskpoint reads them, copies the previous attempt's checkpoint
# forward, and on failure writes <outputPrefix>/error.pb (RECOVERABLE for preemption and
# RecoverableError, origin SYSTEM for preemption) and exits 0, as flytekit does.
from flytekit import ContainerTask, kwtypes, workflow

train = ContainerTask(
    name="taskpoint-train",
    image="ghcr.io/example/trainer:latest",
    inputs=kwtypes(epochs=int),
    command=[
        "node", "dist/train.js",
        "--checkpoint-path", "{{.checkpointOutputPrefix}}",
        "--prev-checkpoint", "{{.prevCheckpointPrefix}}",
        "--output-prefix", "{{.outputPrefix}}",
        "--epochs", "{{.inputs.epochs}}",
    ],
    retries=3,
    interruptible=True,  # allowed to run on spot; preemptions count as system retries
)


@workflow
def wf(epochs: int = 10):
    train(epochs=epochs)
