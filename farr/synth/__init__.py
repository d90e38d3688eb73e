"""Synthetic populations from a trained model, exported to OMOP and FHIR, with a release report.

`synthesize` samples people from a model card's training population and their lives from the
model; `report.synth_report` measures fidelity, utility and privacy against the real data and
decides the release gate, signing a manifest of every file only when the gate passes.
"""

from farr.synth.synthesize import synthesize

__all__ = ["synthesize"]
