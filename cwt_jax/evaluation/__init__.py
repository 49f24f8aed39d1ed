"""Evaluation: runs of episodes scored with and without the CWT.

The feature cache and source they read; the metrics, results, panels and metric files
they write.
"""
