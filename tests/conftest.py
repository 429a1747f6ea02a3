import sys
from pathlib import Path

# Tests import the lab's library (lab/labctl.py) and the integration fixtures.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))
