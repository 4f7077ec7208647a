"""Run a module as `python -m <module>` would, from the run's code snapshot and never from the working
directory: kind=hydra_app's tasks start a module app (hydra_app.module) as

    <python> <snapshot>/jobs/runtime/run_module.py <module> <args...>

`python -m` puts the working directory first on sys.path, so an app started in the user's checkout
would import the checkout's package instead of the snapshot's (and this file's own folder would
shadow the standard library's `http`, `signal`...): both leave sys.path before anything else is
imported, then runpy runs the module as __main__ (runpy.run_module, alter_sys: sys.argv[0] is the
module's file, as under -m; Hydra reads its config_path relative to that file). Standard library only."""
import sys

del sys.path[0]  # this file's folder: before any import below can find a module there

import runpy  # noqa: E402 - after the path is cleaned


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: run_module.py <module> [args...]")
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
