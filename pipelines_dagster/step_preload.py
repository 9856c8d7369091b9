"""Imported once by the multiprocess executor's forkserver, so that every step process forked from it starts
with what a step needs already loaded: the instance's SQLite storages (about 0.6 s of imports otherwise paid by
every step), the GitHub and AWS clients, and boto3's S3 models (0.09 s of CPU otherwise paid by every step that
writes its logs to S3)."""

import gc
import importlib.util

import boto3  # noqa: F401
import github  # noqa: F401
from dagster._core.instance import factory  # noqa: F401
from dagster._core.storage.event_log import sqlite as event_log_sqlite  # noqa: F401
from dagster._core.storage.runs import sqlite as runs_sqlite  # noqa: F401
from dagster._core.storage.schedules import sqlite as schedules_sqlite  # noqa: F401

from . import definitions  # noqa: F401

if importlib.util.find_spec("dagster_aws"):  # the production profile's S3 compute logs: boto3's models read once
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.resource("s3", region_name="us-east-1", aws_access_key_id="preload",
                                   aws_secret_access_key="preload")  # no credentials looked up here

# what is loaded now lives as long as every step forked from here: out of the collector's sight, so that no step
# process pays for a full collection of it (nor copies its pages by touching them)
gc.freeze()
