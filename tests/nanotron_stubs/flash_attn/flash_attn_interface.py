"""Placeholder: every name nanotron imports from here exists and refuses to run."""


def __getattr__(name):
    def missing(*args, **kwargs):
        raise RuntimeError(f"flash_attn.flash_attn_interface.{name} is a test placeholder (no CUDA)")
    return missing
