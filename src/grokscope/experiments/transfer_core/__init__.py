"""What the transfer and similarity kinds share: does what a model found by grokking one task help it learn
another, and what does it forget?

For each seed a source run trains the source task; checkpoints are chosen by criteria (:mod:`.checkpoints`);
target runs start from each chosen checkpoint or a random init, everything else identical (:mod:`.plan`); each
target run is measured (:mod:`.measures`) and the conditions compared (:mod:`.statistics`); :mod:`.pipeline` runs
the whole on an engine. Settings live in :mod:`.config`.
"""
