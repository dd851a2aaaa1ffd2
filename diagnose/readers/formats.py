"""The names of the readers (the keys of `registry.READERS`, in order), importable without the
readers and pandas: the command line's help lists them before anything is read."""

FORMATS = (
    "diagnose",
    "jsonl",
    "huggingface",
    "lightning",
    "keras",
    "yolo",
    "csv",
    "json",
    "nanogpt",
    "llmc",
    "text",
    "trainer_stdout",
    "tensorboard",
)
