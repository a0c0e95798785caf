import sys
from pathlib import Path

# tests/reference.py and tests/helpers.py are imported by name
sys.path.insert(0, str(Path(__file__).parent))
