"""What the vision-language model is asked, and the strict reading of its answer.

The question is the paper's ("Predict the Pfirrmann grade (0-4) for this intervertebral disc", and its
equivalents for edema and DR severity), preceded by a sentence on what the image shows (the central
slice, or a collage of the sequence's slices) and followed by the answer format. An answer is read only
when it is a grade and nothing else; anything else is counted as unparseable, never mapped to a class.
"""

from __future__ import annotations

import re

QUESTIONS = {
    "spider": "Predict the Pfirrmann grade (0-4) for this intervertebral disc.",
    "brats": "Is there peritumoral edema in this brain? Answer 1 if edema is present, 0 if it is not.",
    "retinamnist": "Predict the diabetic retinopathy severity grade (0-4) for this fundus image.",
}
# what one slice and one sequence are, for the sentence that says what the image shows
SUBJECTS = {
    "spider": ("sagittal T2 MRI slice", "one lumbar intervertebral disc"),
    "brats": ("axial FLAIR MRI slice", "one slab of a brain volume"),
    "retinamnist": ("fundus photograph", "one eye"),
}
ANSWER_FORMAT = "Answer with the single digit only."
ANSWER = re.compile(r"^\s*(?:grade\s*[:=]?\s*)?(\d)\s*\.?\s*$", re.IGNORECASE)


def question(dataset: str, slices: int) -> str:
    """The user's text for an image showing ``slices`` slices of a sequence (1: the central slice)."""
    one, sequence = SUBJECTS[dataset]
    if slices == 1:
        shown = f"The image is the central {one} of {sequence}." if dataset != "retinamnist" else f"The image is a {one}."
    else:
        shown = f"The image shows {slices} {one}s of {sequence}, in order from left to right and top to bottom."
    return f"{shown} {QUESTIONS[dataset]} {ANSWER_FORMAT}"


def parse_answer(text: str, num_classes: int) -> int | None:
    """The grade an answer states ("2", "2.", "Grade: 2"), or None for anything else ("2 or 3", "The disc
    looks healthy", a grade out of range)."""
    match = ANSWER.match(text)
    if match is None or int(match.group(1)) >= num_classes:
        return None
    return int(match.group(1))
