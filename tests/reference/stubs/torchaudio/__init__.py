"""Stand-in for torchaudio, put on sys.path by tests/conftest.py.

qwen_tts/__init__ eagerly imports its (unused) 25 Hz tokenizer, which imports
`torchaudio.compliance.kaldi`. PyPI only offers a CUDA torchaudio build for torch 2.13,
and it fails to import beside the CPU wheel. Nothing on the 12 Hz path calls torchaudio.
"""
