"""Evaluation: reconstruction, prompt adherence and timing control against reference points (``evaluate``)."""
