"""The web app's logic, beside the ``plankton`` library that it uses:
reading uploads (``uploads``), sessions and views (``session``), the
service that runs and re-filters analyses (``service``), formatting and
figures (``render``, ``plots``), downloads, a slider benchmark (``bench``)
and the Gradio tabs (``tabs``). ``app.py`` at the top level builds and
launches it. Nothing in ``plankton`` imports this package."""
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
EXAMPLES = sorted((EXAMPLES_DIR / "frames").glob("*.jpg"))  # shown under the upload box; also the tests' frames
