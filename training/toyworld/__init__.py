"""Training and evaluation of the embedded toy-world models (``python -m training.toyworld.train ...``).

Data (:mod:`.data`), the text-to-image model (:mod:`.train`), its control models (:mod:`.train_control`)
and the evaluation (:mod:`.evaluate`). The renderer and classifier they use stay in the runtime package
(:mod:`tuneavideo.toyworld`).
"""
