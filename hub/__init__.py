"""Publishing model artifacts to the Hugging Face Hub.

    python -m hub push ARTIFACT_DIR --repo ORG/NAME [--revision BRANCH] [--tag vX.Y] [--private]
    python -m hub card ARTIFACT_DIR [--repo ORG/NAME]      # print the model card that push would write
    python -m hub space ORG/NAME [--model-repo ORG/MODEL] [--model-revision REV] [--dry-run]  # deploy the demo Space (Spaces.md)

This package is the command line; the work is in the library:
plankton_app.publish (push, with plankton.artifact.card; the app publishes
its saved versions with it) and plankton.hub (pull).
plankton never imports this package.
"""
