"""Answer tokens, as positions in a response's token ids.

Rule:
- a **correct** response: the tokens that overlap the matched alias. Each token's character range is
  found by decoding growing prefixes of the response ids (so positions come from the tokenizer, not
  from matching decoded token strings); the alias is found in the decoded text with the judge's
  normalization (case, accents, punctuation, articles ignored).
- a **wrong** response: its content tokens, without filler: special tokens (the end token is never
  part of a stored response), tokens that decode to only whitespace or punctuation, function words
  (``FUNCTION_WORDS``) and words echoed from the question. "The capital of France is Lyon." gives
  "Lyon", like a correct answer gives its alias, so the two classes' spans are alike in kind and the
  probe cannot separate them by span length or by echoed words. If nothing is left, the content
  tokens without only the special and punctuation ones are used.
Regions over the whole sequence (prompt + response): ``answer`` (the span above), ``output`` (all
response tokens), ``other`` (every token not in the answer span, prompt and chat template included).
"""

from __future__ import annotations

import re
import string
import unicodedata

from hedit.score.judge import normalize

REGIONS = ("answer", "output", "other")
_FILLER = set(string.punctuation + string.whitespace + "‘’“”–—")
FUNCTION_WORDS = frozenset(
    """
a an the is are was were be been being am of in on at to for from by with and or as that this these those
it its it's he she they his her their i my we our you your answer capital called named known which who what
""".split()
)


def token_char_ends(tokenizer, ids: list[int]) -> tuple[str, list[int]]:
    """The decoded text and, for each token, the end of its characters in that text."""
    ends = [len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True)) for k in range(len(ids))]
    return tokenizer.decode(ids, skip_special_tokens=True), ends


def _fold(text: str) -> tuple[str, list[int]]:
    """Lowercase, accent-free text and the original index of each of its characters."""
    out, where = [], []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKD", ch):
            if not unicodedata.combining(c):
                out.append(c.lower())
                where.append(i)
    return "".join(out), where


def alias_char_span(text: str, alias: str) -> tuple[int, int] | None:
    words = normalize(alias).split()
    if not words:
        return None
    sep = r"[\W_]+(?:(?:a|an|the)[\W_]+)?"
    pattern = r"(?<![a-z0-9])" + sep.join(re.escape(w) for w in words) + r"(?![a-z0-9])"
    folded, where = _fold(text)
    m = re.search(pattern, folded)
    if not m:
        return None
    return where[m.start()], where[m.end() - 1] + 1


def content_positions(tokenizer, ids: list[int]) -> list[int]:
    special = set(tokenizer.all_special_ids)
    keep = []
    for k, t in enumerate(ids):
        if t in special:
            continue
        piece = tokenizer.decode([t], skip_special_tokens=True)
        if piece and not set(piece) <= _FILLER:
            keep.append(k)
    return keep


def claim_positions(tokenizer, ids: list[int], question: str) -> list[int]:
    """Content tokens whose word is neither a function word nor echoed from the question."""
    content = content_positions(tokenizer, ids)
    if not content:
        return []
    text, ends = token_char_ends(tokenizer, ids)
    starts = [0] + ends[:-1]
    echoed = set(normalize(question).split()) | FUNCTION_WORDS
    keep = []
    for m in re.finditer(r"\w+", text):
        word = normalize(m.group())
        if not word or word in echoed:  # articles normalize to ""
            continue
        keep += [k for k in content if starts[k] < m.end() and ends[k] > m.start()]
    return sorted(set(keep)) or content


def answer_positions(tokenizer, ids: list[int], label: str, alias: str | None, question: str = "") -> list[int]:
    """Positions (in ``ids``) of the answer tokens, by the rule in this module's docstring."""
    if label == "correct" and alias:
        text, ends = token_char_ends(tokenizer, ids)
        span = alias_char_span(text, alias)
        if span is not None:
            s, e = span
            starts = [0] + ends[:-1]
            hit = [k for k in range(len(ids)) if starts[k] < e and ends[k] > s]
            if hit:
                return hit
    return claim_positions(tokenizer, ids, question)
