"""The engine every method runs on, written once: the plane driver (:mod:`.planes`: lazy planes in,
preallocated outputs out), the batched device predictor (:mod:`.predict`) and the training loop with
its device-resident samplers (:mod:`.train`). No napari, Qt or magicgui here."""
