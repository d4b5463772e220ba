"""Stand-in module; see ../../__init__.py. Any use of it is a bug in the test set-up."""


def __getattr__(name):
    raise RuntimeError(f"torchaudio stub: torchaudio.compliance.kaldi.{name} is not available (12 Hz path only)")
