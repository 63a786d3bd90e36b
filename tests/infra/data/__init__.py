"""Handlers modules for the worker-pool tests (test_pools.py); never deployed."""
