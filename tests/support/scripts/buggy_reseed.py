"""ddp_mlp.py with a classic resume bug: on resume it reseeds the RNGs instead of restoring them."""
import os
import runpy
import sys

sys.argv = [sys.argv[0], "--bug", "reseed", *sys.argv[1:]]
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_mlp.py"), run_name="__main__")
