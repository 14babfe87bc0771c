"""Command line for checkpoints: ``python -m custom.networks <command> --help``.

Commands::

    # models/model_ensemble.pt for configs/ensemble.yaml: DALACE's model.pt (both paths) and a
    # CT-only U-Net's model.pt (unet_ct.yaml at the same sizes)
    python -m custom.networks ensemble bundle/models/model.pt <unet run>/models/model.pt bundle/models/model_ensemble.pt
    # models/model_self_ensemble.pt for configs/self_ensemble.yaml: a DALACE model.pt and the model.pt of
    # its student (self_training.yaml), both with CT's path
    python -m custom.networks self_ensemble bundle/models/model.pt <student run>/models/model.pt bundle/models/model_self_ensemble.pt
    # models/model_seed_ensemble.pt for configs/seed_ensemble.yaml: the model.pt of DALACE trainings that
    # differ in their seed (or recipe), all with CT's path and one architecture
    python -m custom.networks seed_ensemble bundle/models/model.pt <seed 1 run>/models/model.pt --output bundle/models/model_seed_ensemble.pt
    # ... with a training at 2 mm among them (the others at inference.yaml's 3 mm): its spacing recorded
    python -m custom.networks seed_ensemble <3 mm model.pt> <3 mm model.pt> <2 mm model.pt> --spacings "[3,3,2]" --output <file>
"""

from __future__ import annotations

import fire
import torch

from custom.handlers import check_checkpoint, require_file
from custom.utils import atomic_save

from .ensemble import ensemble_state


def _state(path: str, what: str) -> dict:
    """The state_dict in ``path``, loaded with ``weights_only=True``; errors name the file and the problem."""
    check_checkpoint(require_file(path, what), what)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} {path!r} is not a bare state_dict (as models/model.pt is).")
    return state


def ensemble(dalace: str, unet: str, output: str) -> str:
    """Write ``output``: the state_dict of configs/ensemble.yaml's network from its members' files."""
    dalace_state, unet_state = _state(dalace, "DALACE model"), _state(unet, "U-Net model")
    if not any(k.startswith("anatomy_encoder.") for k in dalace_state):
        raise ValueError(f"DALACE model {dalace!r} has no anatomy_encoder.* weights: is it the U-Net's?")
    if any(k.startswith(("anatomy_encoder.", "segmenter.")) for k in unet_state):
        raise ValueError(f"U-Net model {unet!r} holds DALACE's weights (anatomy_encoder.* or segmenter.*), not a plain U-Net's.")
    atomic_save(ensemble_state({"dalace": dalace_state, "unet_ct": unet_state}), output)
    return output


def _dalace_states(paths: dict[str, str]) -> dict[str, dict]:
    """name -> state_dict of DALACE networks of one architecture (the same keys and shapes), each checked."""
    states = {name: _state(path, f"{name} model") for name, path in paths.items()}
    for name, state in states.items():
        if not any(k.startswith("anatomy_encoder.") for k in state):
            raise ValueError(f"{name} model {paths[name]!r} has no anatomy_encoder.* weights: it is not a DALACE model.")
    (first, reference), *others = [(name, {k: tuple(v.shape) for k, v in state.items()}) for name, state in states.items()]
    for name, shapes in others:
        if shapes != reference:
            differ = sorted(set(reference.items()) ^ set(shapes.items()))[:3]
            raise ValueError(f"{first} model {paths[first]!r} and {name} model {paths[name]!r} are not one architecture "
                             f"(keys or shapes differ, e.g. {differ}): train them with the same sizes and extra_paths.")
    return states


def self_ensemble(teacher: str, student: str, output: str) -> str:
    """Write ``output``: the state_dict of configs/self_ensemble.yaml's network from the teacher's and
    the student's files (two DALACE networks of one architecture: the same keys and shapes)."""
    atomic_save(ensemble_state(_dalace_states({"teacher": teacher, "student": student})), output)
    return output


def seed_ensemble(*models: str, output: str, spacings: list[float] | None = None, spacing: float = 3.0) -> str:
    """Write ``output``: the state_dict of configs/seed_ensemble.yaml's network, members ``seed_0``,
    ``seed_1``, ... in the order given (two or more DALACE trainings of one architecture).

    ``spacings``: the pixel spacing (mm) each model was trained at, in order; a model trained at another
    spacing than the inference's (``spacing``, inference.yaml's) is stored with it (``network.*`` and
    ``trained_spacing``), and inference.yaml runs it on slices resized to it (``RescaledInput``)."""
    if len(models) < 2:
        raise ValueError(f"seed_ensemble needs two or more DALACE models, got {len(models)}: {list(models)}.")
    spacings = [float(spacing)] * len(models) if spacings is None else [float(v) for v in (spacings if isinstance(spacings, (list, tuple)) else [spacings])]
    if len(spacings) != len(models) or min(spacings) <= 0 or spacing <= 0:
        raise ValueError(f"seed_ensemble: --spacings needs one positive spacing (mm) per model: {len(models)} models, got {spacings}.")
    states = _dalace_states({f"seed_{i}": m for i, m in enumerate(models)})
    for (name, state), trained in zip(list(states.items()), spacings):
        if trained != float(spacing):
            states[name] = {**{f"network.{k}": v for k, v in state.items()}, "trained_spacing": torch.tensor([trained, trained])}
    atomic_save(ensemble_state(states), output)
    return output


if __name__ == "__main__":
    fire.Fire({"ensemble": ensemble, "self_ensemble": self_ensemble, "seed_ensemble": seed_ensemble})
