"""Handlers that import a package only their own image would have (like torch)."""

import overseer_test_package_not_installed  # noqa: F401

HANDLERS = {"infer": lambda job: None}
