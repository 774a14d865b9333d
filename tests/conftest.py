import os
from pathlib import Path

# Keep numba's on-disk cache inside the (git-ignored) checkout, before numba is imported.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
