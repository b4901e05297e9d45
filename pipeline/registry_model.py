"""The pyfunc model the registry stores ("models from code": MLflow logs this file, not a
pickle). Its artifact is one model directory (config.json + ema.safetensors), and the ``models``
package (with ``fileio``, which it imports) travels with it, so
``mlflow.pyfunc.load_model("models:/drmnet@candidate")`` works without this repository.

``predict`` input: a dict with ``"refmap"`` (B, 3, R, R) float32 linear HDR and optionally
``"mask"`` (B, 1, R, R), ``"num_samples"``, ``"seed"``.
DRMNet output: ``{"mirror": (B, N, 3, R, R), "material": (B, N, 6), "steps": (B, N)}``.
ObsNet output: ``{"completed": (B, 3, R, R)}``.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch


class EstimatorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from models.config import DRMNetConfig
        from models.ddpm import Diffusion
        from models.estimator import Estimator
        from models.weights import load_networks

        (directory,) = (Path(p) for p in context.artifacts.values())
        self.config, nets = load_networks(directory)
        if isinstance(self.config, DRMNetConfig):
            self.estimator = Estimator(self.config, nets["illnet"], nets["refnet"], device="cpu")
        else:
            self.obsnet, self.diffusion = nets["obsnet"], Diffusion(self.config.diffusion)

    # No type hints on predict: MLflow would read them as a (list-based) input schema.
    def predict(self, context, model_input, params=None):
        from models.config import DRMNetConfig
        from models.ddpm import complete_refmap

        refmap = torch.as_tensor(np.asarray(model_input["refmap"], dtype=np.float32))
        seed = int(model_input.get("seed", 0))
        if isinstance(self.config, DRMNetConfig):
            samples = int(model_input.get("num_samples", 1))
            out = self.estimator.estimate(refmap, num_samples=samples, seed=seed)
            return {
                "mirror": out.mirror.numpy(),
                "material": out.material.numpy(),
                "steps": out.steps.numpy(),
            }
        mask = torch.as_tensor(np.asarray(model_input["mask"], dtype=np.float32))
        generator = torch.Generator().manual_seed(seed)
        observed = refmap * (mask > 0.5)
        completed = complete_refmap(self.obsnet, self.diffusion, observed, mask, generator=generator)
        return {"completed": completed.numpy()}


mlflow.models.set_model(EstimatorModel())
