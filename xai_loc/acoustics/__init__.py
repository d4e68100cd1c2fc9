"""Acoustic scenes: rooms, arrays, image-source RIRs, speech corpora, scene rendering.

Modules are imported on demand (``from xai_loc.acoustics.speech import SpeechCorpus``) so
that importing the package stays cheap.
"""
