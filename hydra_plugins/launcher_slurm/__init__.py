"""launcher_slurm: a Hydra launcher plugin that submits a multirun as ONE array job of this launcher
and returns at once (`python train.py -m hydra/launcher=launcher_slurm lr=0.1,0.01`); docs/hydra-app.md.

Hydra finds it by importing every module under the `hydra_plugins` namespace package that does not
start with `_` (config.py registers the config, launcher.py holds the Launcher): both import Hydra only,
so every Hydra app's start stays quick; the launcher itself is imported when a multirun is launched."""
