"""Localizers and their checkpoints.

Architectures are registered by name in :data:`MODELS` (the CLI's choices come from it):
``'loccnn'`` (:class:`LocCNN`) and ``'samplecnn'`` (:class:`SampleCNN`), the end-to-end
multichannel localizers of Comanducci, Antonacci and Sarti (EUSIPCO 2024); the binaural
``'cochcnn'`` (:class:`CochleagramCNN`, the cochleagram classifier of Francl & McDermott
2022), ``'tfcnn'`` (:class:`TFCNN`, the IPD/ILD time-frequency CNN of Pang et al. 2019) and
``'cuenet'`` (:class:`CueNet`, per-cue branches over ITD/ILD/IC maps fused by attention) and
``'bast'`` (:class:`BAST`, the binaural spectrogram transformer of Kuang et al., explained by
AttnLRP in :mod:`xai_loc.explain.attn_lrp`).
Every operation of their forward passes is a registered module, so attribution hooks see
all of it.

Families (:data:`FAMILIES`, :mod:`xai_loc.models.families`) group the architectures with their
scene spec, trainer, composite, probes and command group; every model class follows the
localizer contract of :mod:`xai_loc.models.base` (front end, body, head, levels, decoder).

Checkpoints are single ``.safetensors`` files with a JSON card (:func:`save_checkpoint`,
:func:`read_card`, :func:`load_model`); the paper's state-dict files are converted with
:func:`import_paper_checkpoint`.
"""
from xai_loc.models.base import Localizer
from xai_loc.models.bast import BAST
from xai_loc.models.checkpoint import (
    build_card,
    file_digest,
    import_paper_checkpoint,
    load_model,
    load_paper_model,
    read_card,
    result_entry,
    save_checkpoint,
)
from xai_loc.models.classifier_training import (
    ClassifierConfig,
    DirectionEvaluation,
    direction_metrics,
    evaluate_directions,
    train_classifier,
)
from xai_loc.models.cochleagram_cnn import CochleagramCNN
from xai_loc.models.cuenet import CueNet
from xai_loc.models.evaluation import (
    Evaluation,
    WindowSet,
    evaluate,
    evaluate_checkpoint,
    localization_errors,
    predict,
)
from xai_loc.models.families import FAMILIES, Family, family_of, register_family
from xai_loc.models.layers import Gate, Sum
from xai_loc.models.loccnn import LocCNN
from xai_loc.models.registry import MODELS, build_model, load_plugins, register_model
from xai_loc.models.samplecnn import SampleCNN
from xai_loc.models.tfcnn import TFCNN
from xai_loc.models.trainer import Hooks, Schedule, Trainer, Validation, fit, float16_check
from xai_loc.models.training import DEFAULT_LR, TrainConfig, check_training, state_path, train

load_plugins()  # localizers of other packages (entry-point group xai_loc.localizers), after the built-ins

__all__ = [
    "MODELS",
    "FAMILIES",
    "Family",
    "family_of",
    "register_family",
    "BAST",
    "CochleagramCNN",
    "CueNet",
    "Gate",
    "LocCNN",
    "Localizer",
    "SampleCNN",
    "TFCNN",
    "Sum",
    "build_model",
    "load_plugins",
    "file_digest",
    "import_paper_checkpoint",
    "load_model",
    "load_paper_model",
    "read_card",
    "register_model",
    "save_checkpoint",
    "ClassifierConfig",
    "DirectionEvaluation",
    "direction_metrics",
    "evaluate_directions",
    "train_classifier",
    "DEFAULT_LR",
    "Evaluation",
    "TrainConfig",
    "WindowSet",
    "evaluate",
    "evaluate_checkpoint",
    "localization_errors",
    "predict",
    "check_training",
    "state_path",
    "train",
    "Hooks",
    "Schedule",
    "Trainer",
    "Validation",
    "fit",
    "float16_check",
    "build_card",
    "result_entry",
]
