"""Prompt building: a conversation through the model's chat template (bounded in time, errors in one
line), or plain 'Question: ... Answer:' prompts for base models."""

from __future__ import annotations

from hedit.errors import HeditError


def chat_ids(tokenizer, messages: list[dict[str, str]], chat_template: bool = True) -> list[int]:
    """Token ids of a conversation ending with the prompt for the assistant's next turn."""
    if chat_template and not getattr(tokenizer, "chat_template", None):
        _note_plain(tokenizer)
        chat_template = False
    if chat_template:
        ids = render_chat(tokenizer, messages)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    text = "".join(f"{'Question' if m['role'] == 'user' else 'Answer'}: {m['content']}\n" for m in messages)
    return tokenizer(text + "Answer:")["input_ids"]


RENDER_SECONDS = 10.0  # one prompt through a chat template; a real template takes milliseconds


def render_chat(tokenizer, messages: list[dict[str, str]]):
    """The chat template applied to ``messages`` (token ids), bounded: a template that raises, has bad
    syntax or an unknown filter, or runs past ``RENDER_SECONDS`` is one HeditError naming the model."""
    from hedit.io.files import time_limit

    name = str(getattr(tokenizer, "name_or_path", "") or "the model")
    with time_limit(
        RENDER_SECONDS, f"the chat template of {name} ran for more than {RENDER_SECONDS:g} s on one prompt"
    ):
        try:
            return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        except Exception as e:  # jinja2's TemplateError kinds, and what a template's own code raises
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise HeditError(f"the chat template of {name} cannot be applied: {type(e).__name__}: {why}") from None


_NOTED: set[str] = set()


def _note_plain(tokenizer) -> None:
    """A tokenizer without a chat template is a base model's: plain prompts, said once per tokenizer."""
    name = str(getattr(tokenizer, "name_or_path", "") or "the model")
    if name not in _NOTED:
        _NOTED.add(name)
        import sys

        print(
            f"note: {name} has no chat template (a base model): plain 'Question: ... Answer:' prompts",
            file=sys.stderr,
        )
