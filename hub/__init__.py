"""Publishing model artifacts to the Hugging Face Hub.

    python -m hub push ARTIFACT_DIR --repo ORG/NAME [--revision BRANCH] [--tag vX.Y] [--private]
    python -m hub card ARTIFACT_DIR [--repo ORG/NAME]      # print the model card that push would write

The pulling side (used by the app and the CLI) is plankton.hub; plankton
never imports this package.
"""
