"""Artifacts: the S3 bucket that every persisted artifact goes to (new, or existing by name)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

# Where workers store the items of an expansion in the bucket (``overseer.expansion.items_key``);
# the scheduler reads and deletes objects under it only.
EXPANSION_ITEMS_PREFIX = "_overseer/expansions/"


class Artifacts(Construct):
    """The artifact bucket.

    A new bucket blocks public access, is encrypted (SSE-S3), accepts TLS only, keeps
    versions (an overwritten artifact can be recovered) and expires noncurrent versions
    after ``noncurrent_version_days``; with ``expiration_days`` (0 = never) it also expires
    every current object that many days after it was written (then, as a noncurrent
    version, after ``noncurrent_version_days`` more). It is kept when the stack is deleted. With
    ``existing_bucket_name`` the stack uses that bucket and changes nothing about it.

    Attributes
    ----------
    bucket:
        The bucket (an ``IBucket``; a ``Bucket`` when the stack created it).
    created:
        True when the stack owns the bucket.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        existing_bucket_name: str = "",
        noncurrent_version_days: int = 30,
        expiration_days: int = 0,
    ) -> None:
        super().__init__(scope, construct_id)
        self.created = not existing_bucket_name
        if existing_bucket_name:
            self.bucket: s3.IBucket = s3.Bucket.from_bucket_name(self, "Bucket", existing_bucket_name)
            return
        rules = [
            s3.LifecycleRule(
                id="expire-noncurrent-versions",
                noncurrent_version_expiration=Duration.days(noncurrent_version_days),
                abort_incomplete_multipart_upload_after=Duration.days(7),
            )
        ]
        if expiration_days:
            # Artifacts are shared across graphs (a rerun skips what exists), so they expire
            # by their own age, not with a graph: a later graph rewrites what it still needs.
            rules.append(s3.LifecycleRule(id="expire-artifacts", expiration=Duration.days(expiration_days)))
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=rules,
        )
