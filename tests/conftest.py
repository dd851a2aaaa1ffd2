import os

# Keep the suite fast and deterministic on small CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")
