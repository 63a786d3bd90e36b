#!/usr/bin/env python3
"""CDK app entry point: ``npx cdk synth`` runs ``python3 infra/app.py`` (see cdk.json).

Context ``nag=true`` (``npx cdk synth -c nag=true``) also runs the cdk-nag AwsSolutions
checks, as the infrastructure tests always do.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aws_cdk as cdk

from infra.config import DeploymentConfig
from infra.stack import OverseerStack

STACK_NAME = "Overseer"


def build_app(app: cdk.App | None = None) -> tuple[cdk.App, OverseerStack]:
    """The app with its one stack; the tests call this with their own App."""
    app = app or cdk.App()
    config = DeploymentConfig.from_node(app.node)
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = os.environ.get("CDK_DEFAULT_REGION")
    env = cdk.Environment(account=account, region=region) if account and region else None
    stack = OverseerStack(
        app,
        app.node.try_get_context("stackName") or STACK_NAME,
        config=config,
        env=env,
        description="Overseer for AWS: a job-graph engine on DynamoDB, SQS, Lambda, Batch and S3",
    )
    cdk.Tags.of(stack).add("project", "overseer")
    if str(app.node.try_get_context("nag")).lower() == "true":
        from cdk_nag import AwsSolutionsChecks

        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


if __name__ == "__main__":
    built, _ = build_app()
    built.synth()
