"""Placeholder for tests only (put first on PYTHONPATH of the subprocess that loads nanotron configs on
CPU): `import nanotron.config` reaches flash_attn and triton, which need CUDA. A version below 2.1
makes nanotron's attention module skip its optional flash_attn import."""
__version__ = "0"
