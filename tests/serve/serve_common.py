"""Constants shared by the serve tests and their fixtures (a plain module: `conftest` is not importable by name)."""

#: the served classifier's class names, written into its manifest (the server must report these, not LABEL_i)
CLS_LABELS = ["business", "entertainment", "politics", "sport", "tech"]
#: small limits so the 413 cases need only small requests
MAX_INPUTS, MAX_LENGTH = 16, 32
