"""Where the real pretrained models of ../shared/models are (None where this checkout has none)."""
import os
from pathlib import Path


def shared_model(name: str) -> Path | None:
    """`<clone>/../shared/models/NAME` (CI), else $CAUSALINTERP_SHARED/models/NAME, else /work/shared/models/NAME."""
    bases = [Path(__file__).resolve().parents[2] / "shared"]
    if os.environ.get("CAUSALINTERP_SHARED"):
        bases.append(Path(os.environ["CAUSALINTERP_SHARED"]))
    bases.append(Path("/work/shared"))
    for base in bases:
        if (base / "models" / name / "config.json").is_file():
            return base / "models" / name
    return None
