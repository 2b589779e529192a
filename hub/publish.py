"""``hub``'s name for the push code, which lives in ``plankton_app.publish``
so that an installed app (``pip install .`` installs no ``hub/``) can
publish the versions saved from its corrections."""
from plankton_app.publish import CARD, METRICS, REPO_ID, PushError, collect_files, error_line, prepare, push_artifact

__all__ = ["CARD", "METRICS", "REPO_ID", "PushError", "collect_files", "error_line", "prepare", "push_artifact"]
