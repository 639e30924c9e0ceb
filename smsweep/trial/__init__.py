"""One trial as two phases over a shared context, each handed what it uses.

- `context`: what every phase reads (the resolved spec, the repeat seed, the data, the device).
- `state`: the trial's typed state, checkpointed whole, and the checkpoint store.
- `objectives`: what pretraining optimises (reconstruction, contrastive), one class each.
- `masks`: which masks each reconstruction partition trains with (drawn or scored).
- `pretraining`, `finetuning`: the two phases.
- `inputs`: the one frozen object a trial receives from the sweep.

`smsweep.engines.trainloop` composes them: it builds the context, restores the state, starts the
collaborators (the scorer, the checkpoint store, the partition-0 cache) and runs the phases.
Nothing here imports Ray or MLflow: the session, the recorder and the scoring actors are passed
in.
"""
