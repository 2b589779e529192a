"""``python -m hub push|card|space``: publish model artifacts and deploy the
demo Space. The publishing itself is ``plankton_app.publish`` (the app uses
it too); the Space deploy is ``hub.space``.

    python -m hub push ARTIFACT_DIR --repo ORG/NAME [--revision BRANCH] [--tag vX.Y] [--private]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from hub.publish import PushError, error_line, prepare, push_artifact

from .space import add_parser as add_space_parser
from .space import run as run_space

log = logging.getLogger("hub")


# -- for training scripts ------------------------------------------------------
def add_push_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add --push-to-hub ORG/NAME, --hub-revision, --hub-tag and --hub-private."""
    g = parser.add_argument_group("publishing to the Hugging Face Hub (token: HF_TOKEN or huggingface-cli login)")
    g.add_argument("--push-to-hub", metavar="ORG/NAME", default=None, help="push the finished artifact to this model repo")
    g.add_argument("--hub-revision", metavar="BRANCH", default=None, help="branch to commit to (default main)")
    g.add_argument("--hub-tag", metavar="vX.Y", default=None, help="tag the pushed commit with this version")
    g.add_argument("--hub-private", action="store_true", help="create the repo as private if it does not exist")
    return parser


def push_from_args(folder: str | Path, args: argparse.Namespace) -> dict | None:
    """Push ``folder`` if ``--push-to-hub`` was given; returns push_artifact's dict or None."""
    repo_id = getattr(args, "push_to_hub", None)
    if not repo_id:
        return None
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None  # read now: it may be set after import
    result = push_artifact(folder, repo_id, revision=getattr(args, "hub_revision", None), tag=getattr(args, "hub_tag", None),
                           private=bool(getattr(args, "hub_private", False)), endpoint=endpoint)
    log.info("model published: %s (pin PLANKTON_MODEL_REVISION=%s)", result["url"], result["commit_sha"])
    return result


# -- command line -------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hub", description="Publish plankton model artifacts to the Hugging Face Hub.")
    sub = p.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push", help="push an artifact folder as one commit")
    push.add_argument("folder", help="artifact folder (with config.json)")
    push.add_argument("--repo", required=True, metavar="ORG/NAME", help="model repo (created if missing)")
    push.add_argument("--revision", metavar="BRANCH", default=None, help="branch to commit to (default main; created from main if missing)")
    push.add_argument("--tag", metavar="vX.Y", default=None, help="tag the new commit (must not exist yet)")
    push.add_argument("--private", action="store_true", help="create the repo as private if it does not exist")
    push.add_argument("--message", default=None, help="commit message")
    push.add_argument("--license", default=None, help="license id for the card (default: config.json 'license', else 'unknown')")
    push.add_argument("--endpoint", default=None, help="Hub URL (default: $HF_ENDPOINT or https://huggingface.co)")
    card = sub.add_parser("card", help="print the model card push would write")
    card.add_argument("folder")
    card.add_argument("--repo", default=None, metavar="ORG/NAME")
    card.add_argument("--license", default=None)
    add_space_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="hub: %(message)s")
    if args.command == "space":
        return run_space(args)
    try:
        if args.command == "card":
            print(prepare(args.folder, args.repo, args.license)[2])
            return 0
        result = push_artifact(args.folder, args.repo, revision=args.revision, tag=args.tag, private=args.private, endpoint=args.endpoint, commit_message=args.message, license=args.license)
    except PushError as e:
        print(f"hub: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # huggingface_hub's HTTP and validation errors, in one line
        print(f"hub: push failed: {error_line(e)}", file=sys.stderr)
        return 1
    print(f"hub: {result['url']}" + (f" (tag {result['tag']})" if result["tag"] else ""), file=sys.stderr)
    print(result["commit_sha"])
    return 0
