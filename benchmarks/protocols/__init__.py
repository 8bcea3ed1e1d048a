"""Task protocols: how a dataset is loaded, trained on, rewarded and evaluated.

Each dataset config names its protocol (``dataset.protocol``); the protocol owns, for every
dataset of its kind and for data in memory or streamed from disk alike:

* ``load(cfg)``: the data (through :mod:`benchmarks.data`'s registry),
* ``make_task(cfg, data, model_fn, loss_fn)``: the :mod:`lfs` task (training data, the reward on
  the validation split),
* ``evaluate(cfg, data, model)``: the table's metrics on the test split.

==================  ==============================================================================
``classification``  top-1 error; reward: validation accuracy (:mod:`.classification`)
``retrieval``       re-ID: CMC rank-k and mAP, optional k-reciprocal re-ranking; reward: validation
                    mAP on held-out identities (:mod:`.retrieval`)
``face``            identification: rank-1 with distractors (MegaFace Challenge 1 on disk);
                    reward as retrieval (:mod:`.face`)
==================  ==============================================================================

A new dataset of an existing kind is one loader (:mod:`benchmarks.data`) and one YAML; a new kind
is one file here with ``@register_protocol``.
"""
from .base import Protocol, available, get, register_protocol  # noqa: F401
from . import classification, face, retrieval  # noqa: F401,E402  (they register themselves)
