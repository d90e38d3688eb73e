"""Ingest: source extracts (FHIR, OMOP, MEDS, identifiable farr) into pseudonymised farr datasets."""

from farr.ingest.pipeline import FORMATS, IngestRun, Options, ingest

__all__ = ["FORMATS", "IngestRun", "Options", "ingest"]
