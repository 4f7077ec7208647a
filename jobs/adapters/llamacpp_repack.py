"""llama.cpp's extra CPU buffer types, off. With them (use_extra_bufts: weights repacked at load for the
AMX/AVX-512 kernels), llama_decode segfaults on every quantized type (q8_0, q4_0, q4_k_m, q6_k; f16 is
fine) on the dev machine's Xeon with llama-cpp-python 0.3.36: measured in scoring (kind=quantize) and in
its server (a q8_0 GGUF's first completion killed the server). Repacking changes speed, not results.
llama_cpp.Llama() has no argument for it, so the default model parameters it starts from are wrapped.
Runs in the llamacpp environment (llama_cpp), imported there only."""
from __future__ import annotations

from typing import Callable


def disable(repack: bool = False) -> Callable[[], None]:
    """Every llama_cpp.Llama made from now on loads with use_extra_bufts=repack; returns the undo."""
    import llama_cpp.llama as module

    default = module.llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = repack
        return p

    module.llama_cpp.llama_model_default_params = params

    def undo() -> None:
        module.llama_cpp.llama_model_default_params = default

    return undo
